process CELL2LOCATION_NOTEBOOK {
    tag "${meta.id}"
    label 'process_low'

    container "${ task.ext.container_cpu }"

    input:
    tuple val(meta), path(notebook), val(parameters), path(input_files, stageAs: 'inputs/*')

    output:
    tuple val(meta), path("${prefix}.html")          , emit: html
    tuple val(meta), path("${prefix}.ipynb")         , emit: notebook
    tuple val(meta), path("${prefix}_artifacts/*")   , emit: artifacts
    tuple val(meta), path("params.yml")              , emit: params
    tuple val("${task.process}"), val('cell2location-nf'), eval('python3 -c "import importlib.metadata as m; print(m.version(\'cell2location-nf\'))"'), topic: versions, emit: versions_cell2location
    tuple val("${task.process}"), val('papermill'), eval('python3 -c "import importlib.metadata as m; print(m.version(\'papermill\'))"'), topic: versions, emit: versions_papermill
    tuple val("${task.process}"), val('nbconvert'), eval('python3 -c "import importlib.metadata as m; print(m.version(\'nbconvert\'))"'), topic: versions, emit: versions_nbconvert
    tuple val("${task.process}"), val('jupytext'), eval('python3 -c "import importlib.metadata as m; print(m.version(\'jupytext\'))"'), topic: versions, emit: versions_jupytext

    when:
    task.ext.when == null || task.ext.when

    script:
    def args = task.ext.args ?: ''
    prefix   = task.ext.prefix ?: "${meta.id}"
    // Inputs arrive under inputs/; the notebook reads them by the paths given here (JSON is valid YAML).
    def notebook_params = groovy.json.JsonOutput.toJson([sample: meta.id, cpus: task.cpus] + parameters)
        .replace("'", "'\\''")
    """
    # Jupyter, IPython, matplotlib and numba write caches and runtime files: keep them in the task folder
    # (read-only HOME under Singularity, shared HOME on clusters).
    export HOME="\$PWD" XDG_CACHE_HOME="\$PWD/.cache" XDG_CONFIG_HOME="\$PWD/.config" XDG_DATA_HOME="\$PWD/.local/share"
    export MPLCONFIGDIR="\$PWD/.config/matplotlib" NUMBA_CACHE_DIR="\$PWD/.cache/numba" IPYTHONDIR="\$PWD/.ipython"
    export JUPYTER_CONFIG_DIR="\$PWD/.jupyter" JUPYTER_DATA_DIR="\$PWD/.local/share/jupyter" JUPYTER_RUNTIME_DIR="\$PWD/.local/share/jupyter/runtime"
    export OMP_NUM_THREADS=${task.cpus} MKL_NUM_THREADS=${task.cpus} OPENBLAS_NUM_THREADS=${task.cpus} NUMBA_NUM_THREADS=${task.cpus}

    echo '${notebook_params}' > params.yml

    cell2location-nf render-notebook \\
        --template '${notebook}' \\
        --name '${prefix}' \\
        --params params.yml \\
        ${args}
    """

    stub:
    prefix = task.ext.prefix ?: "${meta.id}"
    """
    mkdir -p ${prefix}_artifacts
    touch ${prefix}.html ${prefix}.ipynb ${prefix}_artifacts/${prefix}_mqc.yaml params.yml
    """
}
