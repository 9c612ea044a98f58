/*
    The analysis DAG: validate inputs, prepare the reference once, prepare each spatial sample, map them
    jointly, render the QC notebooks and gather everything into one MultiQC report.
*/

include { CELL2LOCATION_VALIDATE          } from '../modules/local/cell2location/validate/main'
include { CELL2LOCATION_PREPAREREFERENCE  } from '../modules/local/cell2location/preparereference/main'
include { CELL2LOCATION_PREPARESPATIAL    } from '../modules/local/cell2location/preparespatial/main'
include { CELL2LOCATION_TRAINREFERENCE    } from '../modules/local/cell2location/trainreference/main'
include { CELL2LOCATION_MAP               } from '../modules/local/cell2location/map/main'
include { CELL2LOCATION_NOTEBOOK as REFERENCE_QC_NOTEBOOK } from '../modules/local/cell2location/notebook/main'
include { CELL2LOCATION_NOTEBOOK as MAPPING_QC_NOTEBOOK   } from '../modules/local/cell2location/notebook/main'
include { CELL2LOCATION_REPORTSUMMARY     } from '../modules/local/cell2location/reportsummary/main'
include { MULTIQC                         } from '../modules/local/multiqc/main'

workflow CELL2LOCATION {

    take:
    ch_samplesheet      // value: samplesheet file (or [] when missing)
    ch_params_json      // value: resolved params as JSON
    ch_pipeline_schema  // value: nextflow_schema.json
    ch_input_schema     // value: assets/schema_input.json

    main:

    //
    // MODULE: validate params, samplesheet and input files; nothing else starts until it passes
    //
    CELL2LOCATION_VALIDATE (
        ch_samplesheet,
        ch_params_json,
        ch_pipeline_schema,
        ch_input_schema,
        workflow.launchDir.toString()
    )

    ch_spatial = CELL2LOCATION_VALIDATE.out.samplesheet
        .splitCsv(header: true)
        .map { row ->
            def meta = [
                id                   : row.sample,
                batch                : row.batch ?: row.sample,
                n_cells_per_location : row.n_cells_per_location ?: params.n_cells_per_location,
                hd_bin_size          : row.hd_bin_size ?: params.hd_bin_size,
                input_type           : row.h5ad ? 'h5ad' : 'spaceranger'
            ]
            [ meta, file(row.h5ad ?: row.spaceranger_dir) ]
        }

    // The reference depends only on its own inputs, so adding samples never re-runs it (-resume).
    ch_reference = CELL2LOCATION_VALIDATE.out.samplesheet
        .map { _sheet -> [ [ id: 'reference' ], file(params.reference) ] }

    //
    // MODULE: reference counts check and cell2location gene filter
    //
    CELL2LOCATION_PREPAREREFERENCE ( ch_reference )

    //
    // MODULE: reference signatures (NB regression), trained once per reference and reused for every sample
    //
    CELL2LOCATION_TRAINREFERENCE ( CELL2LOCATION_PREPAREREFERENCE.out.h5ad )

    //
    // MODULE: read each spatial sample and keep the genes shared with the reference
    //
    CELL2LOCATION_PREPARESPATIAL (
        ch_spatial,
        CELL2LOCATION_PREPAREREFERENCE.out.h5ad
    )

    //
    // MODULE: map all samples jointly (sorted, so the task hash does not depend on arrival order)
    //
    CELL2LOCATION_MAP (
        CELL2LOCATION_TRAINREFERENCE.out.signatures.map { meta, signatures -> [ [ id: 'mapping' ], signatures ] },
        CELL2LOCATION_PREPARESPATIAL.out.h5ad.map { _meta, h5ad -> h5ad }.toSortedList { a, b -> a.name <=> b.name }
    )

    //
    // MODULE: reference QC notebook (gene filter, training, reconstruction, signatures, cells per type and batch)
    //
    ch_reference_qc = CELL2LOCATION_PREPAREREFERENCE.out.gene_statistics
        .join(CELL2LOCATION_PREPAREREFERENCE.out.h5ad)
        .join(CELL2LOCATION_TRAINREFERENCE.out.h5ad)
        .join(CELL2LOCATION_TRAINREFERENCE.out.model)
        .join(CELL2LOCATION_TRAINREFERENCE.out.signatures)
        .join(CELL2LOCATION_TRAINREFERENCE.out.summary)
        .map { meta, stats, prepared, trained, model, signatures, summary ->
            def inputs = [gene_statistics: stats, prepared_h5ad: prepared, trained_h5ad: trained, model: model,
                          signatures: signatures, summary: summary]
            [ [ id: "${meta.id}_qc" ], file("${projectDir}/assets/notebooks/reference_qc.py"),
              inputs.collectEntries { k, f -> [ (k): "inputs/${f.name}" ] } + [ sample: meta.id ],
              inputs.values() as List ]
        }
    REFERENCE_QC_NOTEBOOK ( ch_reference_qc )

    //
    // MODULE: one mapping QC notebook per sample (the model is shared; the notebook reads this sample's h5ad)
    //
    ch_mapping_qc = CELL2LOCATION_MAP.out.h5ad
        .flatten()
        .combine(CELL2LOCATION_TRAINREFERENCE.out.signatures.map { _meta, signatures -> signatures })
        .combine(CELL2LOCATION_MAP.out.model.map { _meta, model -> model })
        .combine(CELL2LOCATION_MAP.out.summary.map { _meta, summary -> summary })
        .map { mapped, signatures, model, summary ->
            def sample = mapped.name - '.mapped.h5ad'
            def inputs = [mapped_h5ad: mapped, signatures: signatures, model: model, summary: summary]
            [ [ id: "${sample}_mapping_qc", sample: sample ], file("${projectDir}/assets/notebooks/mapping_qc.py"),
              inputs.collectEntries { k, f -> [ (k): "inputs/${f.name}" ] } + [ sample: sample ],
              inputs.values() as List ]
        }
    MAPPING_QC_NOTEBOOK ( ch_mapping_qc )

    //
    // Collate software versions from the 'versions' topic (MultiQC reads the *_mqc_versions.yml format)
    //
    ch_versions_yaml = channel.topic('versions')
        .mix(channel.of([ 'Workflow', 'Nextflow', workflow.nextflow.version.toString() ],
                        [ 'Workflow', workflow.manifest.name, workflow.manifest.version ]))
        .map { process, tool, version -> [ process.tokenize(':')[-1], tool, version ] }
        .unique()
        .collect(flat: false)
        .map { rows ->
            rows.groupBy { it[0] }.sort().collect { process, tools ->
                "${process}:\n" + tools.collect { "    ${it[1]}: ${it[2]}" }.sort().join('\n')
            }.join('\n')
        }
        .collectFile(
            storeDir: "${params.outdir}/pipeline_info",
            name: 'cell2location_nf_software_mqc_versions.yml',
            newLine: true
        )

    //
    // MODULE: the report's own sections: parameter summary, methods, links to the notebooks
    //
    // Gated on the validated samplesheet: without it a failed validation closes the notebooks' channels
    // empty, and the summary (and MultiQC after it) could start before Nextflow stops.
    ch_notebook_links = CELL2LOCATION_VALIDATE.out.samplesheet
        .combine(
            REFERENCE_QC_NOTEBOOK.out.html.map { _meta, html -> "reports/reference/${html.name}" }
                .mix(MAPPING_QC_NOTEBOOK.out.html.map { meta, html -> "reports/${meta.sample}/${html.name}" })
                .toSortedList()
                .map { links -> [ links ] }
        )
        .map { _sheet, links -> links }
    CELL2LOCATION_REPORTSUMMARY (
        ch_params_json,
        ch_pipeline_schema,
        file("${projectDir}/assets/methods_description_template.yml"),
        ch_notebook_links,
        workflow.commandLine
    )

    //
    // MODULE: MultiQC over the notebooks' tables and figures, versions and the summary sections
    //
    // Likewise gated on the summary, which only a passed validation lets run.
    ch_multiqc_files = CELL2LOCATION_REPORTSUMMARY.out.summary
        .combine(
            REFERENCE_QC_NOTEBOOK.out.artifacts.map { _meta, files -> files }
                .mix(MAPPING_QC_NOTEBOOK.out.artifacts.map { _meta, files -> files })
                .flatten()
                .mix(ch_versions_yaml)
                .mix(CELL2LOCATION_REPORTSUMMARY.out.summary)
                .mix(CELL2LOCATION_REPORTSUMMARY.out.methods)
                .mix(CELL2LOCATION_REPORTSUMMARY.out.notebooks)
                .toSortedList { a, b -> a.name <=> b.name }
                .map { files -> [ files ] }
        )
        .map { _summary, files -> files }
    MULTIQC (
        ch_multiqc_files,
        file("${projectDir}/assets/multiqc_config.yml"),
        params.multiqc_config ? file(params.multiqc_config) : [],
        params.multiqc_logo ? file(params.multiqc_logo) : []
    )

    emit:
    reference_h5ad = CELL2LOCATION_PREPAREREFERENCE.out.h5ad
    signatures     = CELL2LOCATION_TRAINREFERENCE.out.signatures
    mapped_h5ad    = CELL2LOCATION_MAP.out.h5ad
    spatial_h5ad   = CELL2LOCATION_PREPARESPATIAL.out.h5ad
    multiqc_report = MULTIQC.out.report
}
