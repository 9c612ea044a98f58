/*
    The analysis DAG: validate inputs, prepare the reference once, prepare each spatial sample.
*/

include { CELL2LOCATION_VALIDATE          } from '../modules/local/cell2location/validate/main'
include { CELL2LOCATION_PREPAREREFERENCE  } from '../modules/local/cell2location/preparereference/main'
include { CELL2LOCATION_PREPARESPATIAL    } from '../modules/local/cell2location/preparespatial/main'
include { CELL2LOCATION_TRAINREFERENCE    } from '../modules/local/cell2location/trainreference/main'
include { CELL2LOCATION_MAP               } from '../modules/local/cell2location/map/main'

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
    // Collate software versions from the 'versions' topic
    //
    channel.topic('versions')
        .map { process, tool, version -> "${process.tokenize(':')[-1]}:\n    ${tool}: ${version}" }
        .unique()
        .collectFile(
            storeDir: "${params.outdir}/pipeline_info",
            name: 'cell2location_nf_software_versions.yml',
            sort: true,
            newLine: true
        )

    emit:
    reference_h5ad = CELL2LOCATION_PREPAREREFERENCE.out.h5ad
    signatures     = CELL2LOCATION_TRAINREFERENCE.out.signatures
    mapped_h5ad    = CELL2LOCATION_MAP.out.h5ad
    spatial_h5ad   = CELL2LOCATION_PREPARESPATIAL.out.h5ad
}
