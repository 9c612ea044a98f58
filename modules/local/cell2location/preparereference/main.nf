process CELL2LOCATION_PREPAREREFERENCE {
    tag "${meta.id}"
    label 'process_low'

    container "${ task.ext.container_cpu }"

    input:
    tuple val(meta), path(reference)

    output:
    tuple val(meta), path("${prefix}.prepared.h5ad"), emit: h5ad
    tuple val(meta), path("${prefix}.gene_filter.png"), emit: gene_filter_plot
    tuple val(meta), path("${prefix}.gene_statistics.csv"), emit: gene_statistics
    tuple val("${task.process}"), val('cell2location-nf'), eval('python3 -c "import importlib.metadata as m; print(m.version(\'cell2location-nf\'))"'), topic: versions, emit: versions_cell2location

    when:
    task.ext.when == null || task.ext.when

    script:
    def args = task.ext.args ?: ''
    prefix   = task.ext.prefix ?: "${meta.id}"
    """
    export HOME="\$PWD" MPLCONFIGDIR="\$PWD/.config/matplotlib" NUMBA_CACHE_DIR="\$PWD/.cache/numba"
    export OMP_NUM_THREADS=${task.cpus} MKL_NUM_THREADS=${task.cpus} OPENBLAS_NUM_THREADS=${task.cpus}

    cell2location-nf prepare-reference \\
        --reference '${reference}' \\
        --output '${prefix}.prepared.h5ad' \\
        --plot '${prefix}.gene_filter.png' \\
        --gene-stats '${prefix}.gene_statistics.csv' \\
        ${args}
    """

    stub:
    prefix = task.ext.prefix ?: "${meta.id}"
    """
    touch ${prefix}.prepared.h5ad ${prefix}.gene_filter.png ${prefix}.gene_statistics.csv
    """
}
