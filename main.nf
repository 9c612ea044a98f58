#!/usr/bin/env nextflow
/*
========================================================================================
    cell2location-nf: map cell types onto spatial transcriptomics with cell2location
========================================================================================
*/

include { CELL2LOCATION            } from './workflows/cell2location'
include { PIPELINE_INITIALISATION  } from './subworkflows/local/utils_cell2location_pipeline'
include { PIPELINE_COMPLETION      } from './subworkflows/local/utils_cell2location_pipeline'

workflow CELL2LOCATION_NF {

    take:
    samplesheet
    params_json
    pipeline_schema
    input_schema

    main:
    CELL2LOCATION ( samplesheet, params_json, pipeline_schema, input_schema )
}

workflow {

    main:
    //
    // SUBWORKFLOW: --help / --version and the inputs of validation
    //
    PIPELINE_INITIALISATION ()

    //
    // WORKFLOW: the analysis
    //
    CELL2LOCATION_NF (
        PIPELINE_INITIALISATION.out.samplesheet,
        PIPELINE_INITIALISATION.out.params_json,
        PIPELINE_INITIALISATION.out.pipeline_schema,
        PIPELINE_INITIALISATION.out.input_schema
    )

    //
    // SUBWORKFLOW: completion message
    //
    PIPELINE_COMPLETION ()
}
