process CELL2LOCATION_PREPARESPATIAL {
    tag "${meta.id}"
    label 'process_low'

    container "${ task.ext.container_cpu }"

    input:
    tuple val(meta), path(spatial, stageAs: 'input/*')   // Space Ranger outs/ folder or .h5ad
    tuple val(ref_meta), path(reference)                 // prepared reference (its genes)

    output:
    tuple val(meta), path("${prefix}.prepared.h5ad"), emit: h5ad
    tuple val("${task.process}"), val('cell2location-nf'), eval('python3 -c "import importlib.metadata as m; print(m.version(\'cell2location-nf\'))"'), topic: versions, emit: versions_cell2location

    when:
    task.ext.when == null || task.ext.when

    script:
    def args   = task.ext.args ?: ''
    prefix     = task.ext.prefix ?: "${meta.id}"
    def source = meta.input_type == 'h5ad' ? "--h5ad '${spatial}'" : "--spaceranger-dir '${spatial}'"
    def n      = meta.n_cells_per_location ? "--n-cells-per-location ${meta.n_cells_per_location}" : ''
    def bins   = meta.hd_bin_size ? "--hd-bin-size ${meta.hd_bin_size}" : ''
    """
    export HOME="\$PWD" MPLCONFIGDIR="\$PWD/.config/matplotlib" NUMBA_CACHE_DIR="\$PWD/.cache/numba"
    export OMP_NUM_THREADS=${task.cpus} MKL_NUM_THREADS=${task.cpus} OPENBLAS_NUM_THREADS=${task.cpus}

    cell2location-nf prepare-spatial \\
        --sample '${meta.id}' \\
        ${source} \\
        --reference '${reference}' \\
        --batch '${meta.batch}' \\
        ${n} \\
        ${bins} \\
        --output '${prefix}.prepared.h5ad' \\
        ${args}
    """

    stub:
    prefix = task.ext.prefix ?: "${meta.id}"
    """
    touch ${prefix}.prepared.h5ad
    """
}
