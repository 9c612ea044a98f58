/*
    The QC notebook module on its own, given a mapping notebook whose input file does not exist:
    the task must fail and show the notebook's own error (tests/test_report_outputs.py).
*/

include { CELL2LOCATION_NOTEBOOK } from '../../../modules/local/cell2location/notebook/main'

workflow {
    CELL2LOCATION_NOTEBOOK (
        channel.of([
            [ id: 'sample_1_mapping_qc' ],
            file("${projectDir}/../../../assets/notebooks/mapping_qc.py"),
            [ sample: 'sample_1', mapped_h5ad: 'inputs/no_such_sample.mapped.h5ad' ],
            []
        ])
    )
}
