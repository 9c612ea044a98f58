process CELL2LOCATION_REPORTSUMMARY {
    label 'process_single'

    container "${ task.ext.container_cpu }"

    input:
    path(params_json)           // the run's resolved parameters
    path(pipeline_schema)       // nextflow_schema.json
    path(methods_template)      // assets/methods_description_template.yml
    val(notebooks)              // published notebook HTML paths, relative to the output folder
    val(command_line)

    output:
    path("workflow_summary_mqc.yaml")    , emit: summary
    path("methods_description_mqc.yaml") , emit: methods
    path("notebooks_mqc.html")           , emit: notebooks
    tuple val("${task.process}"), val('cell2location-nf'), eval('python3 -c "import importlib.metadata as m; print(m.version(\'cell2location-nf\'))"'), topic: versions, emit: versions_cell2location

    when:
    task.ext.when == null || task.ext.when

    script:
    def notebook_args = notebooks.collect { "--notebook '${it}'" }.join(' ')
    """
    export HOME="\$PWD" MPLCONFIGDIR="\$PWD/.config/matplotlib"
    cell2location-nf report-summary \\
        --params '${params_json}' \\
        --schema '${pipeline_schema}' \\
        --methods-template '${methods_template}' \\
        --version '${workflow.manifest.version}' \\
        --nextflow-version '${workflow.nextflow.version}' \\
        --command-line '${command_line.replace("'", "'\\''")}' \\
        ${notebook_args}
    """

    stub:
    """
    touch workflow_summary_mqc.yaml methods_description_mqc.yaml notebooks_mqc.html
    """
}
