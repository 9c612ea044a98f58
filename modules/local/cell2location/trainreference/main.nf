process CELL2LOCATION_TRAINREFERENCE {
    tag "${meta.id}"
    label 'process_medium'
    label 'process_gpu'

    // The CUDA image when the task gets an accelerator (--use_gpu, conf/gpu.config), the slim CPU image otherwise.
    container "${ task.accelerator ? task.ext.container_gpu : task.ext.container_cpu }"

    input:
    tuple val(meta), path(reference)   // prepared reference .h5ad

    output:
    tuple val(meta), path("${prefix}.signatures.csv")        , emit: signatures
    tuple val(meta), path("${prefix}.trained.h5ad")          , emit: h5ad
    tuple val(meta), path("${prefix}.reference_model.h5")    , emit: model
    tuple val(meta), path("${prefix}.*.png")                 , emit: plots
    tuple val(meta), path("${prefix}.training_summary.json") , emit: summary
    tuple val("${task.process}"), val('cell2location-nf'), eval('python3 -c "import importlib.metadata as m; print(m.version(\'cell2location-nf\'))"'), topic: versions, emit: versions_cell2location
    tuple val("${task.process}"), val('torch'), eval('python3 -c "import importlib.metadata as m; print(m.version(\'torch\'))"'), topic: versions, emit: versions_torch
    tuple val("${task.process}"), val('pyro-ppl'), eval('python3 -c "import importlib.metadata as m; print(m.version(\'pyro-ppl\'))"'), topic: versions, emit: versions_pyro
    tuple val("${task.process}"), val('cuda'), eval('python3 -c "import torch; print(torch.version.cuda or \'none\')"'), topic: versions, emit: versions_cuda

    when:
    task.ext.when == null || task.ext.when

    script:
    def args = task.ext.args ?: ''
    prefix   = task.ext.prefix ?: "${meta.id}"
    """
    export HOME="\$PWD" MPLCONFIGDIR="\$PWD/.config/matplotlib" NUMBA_CACHE_DIR="\$PWD/.cache/numba"
    export OMP_NUM_THREADS=${task.cpus} MKL_NUM_THREADS=${task.cpus} OPENBLAS_NUM_THREADS=${task.cpus}

    cell2location-nf train-reference \\
        --reference '${reference}' \\
        --outdir . \\
        --prefix '${prefix}' \\
        ${args}
    """

    stub:
    prefix = task.ext.prefix ?: "${meta.id}"
    """
    touch ${prefix}.signatures.csv ${prefix}.trained.h5ad ${prefix}.reference_model.h5 \\
        ${prefix}.elbo_history.png ${prefix}.training_summary.json
    """
}
