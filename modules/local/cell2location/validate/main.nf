process CELL2LOCATION_VALIDATE {
    tag "samplesheet"
    label 'process_single'

    container "${ task.ext.container_cpu }"

    input:
    path samplesheet        // may be [] when --input was not given; the validator then reports it
    path params_json
    path pipeline_schema
    path input_schema
    val  base_dir

    output:
    path 'validated_samplesheet.csv', emit: samplesheet
    tuple val("${task.process}"), val('cell2location-nf'), eval('python3 -c "import importlib.metadata as m; print(m.version(\'cell2location-nf\'))"'), topic: versions, emit: versions_cell2location

    when:
    task.ext.when == null || task.ext.when

    script:
    def args  = task.ext.args ?: ''
    def sheet = samplesheet ? "--samplesheet '${samplesheet}'" : ''
    """
    export HOME="\$PWD" MPLCONFIGDIR="\$PWD/.config/matplotlib" NUMBA_CACHE_DIR="\$PWD/.cache/numba"

    cell2location-nf validate \\
        --params '${params_json}' \\
        ${sheet} \\
        --pipeline-schema '${pipeline_schema}' \\
        --input-schema '${input_schema}' \\
        --base-dir '${base_dir}' \\
        --output validated_samplesheet.csv \\
        ${args}
    """

    stub:
    // the samplesheet passes through unchecked, so a stub run still fans out per sample
    def sheet = samplesheet ?: ''
    """
    if [ -n '${sheet}' ]; then
        cp '${sheet}' validated_samplesheet.csv
    else
        echo "sample,spaceranger_dir,h5ad,batch,n_cells_per_location,hd_bin_size" > validated_samplesheet.csv
    fi
    """
}
