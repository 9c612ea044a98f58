process MULTIQC {
    label 'process_single'

    container "${ task.ext.container_cpu }"

    input:
    path(multiqc_files, stageAs: "?/*")     // every _mqc file, the versions YAML and the summary sections
    path(multiqc_config)                     // assets/multiqc_config.yml
    path(extra_multiqc_config)               // --multiqc_config, or []
    path(multiqc_logo)                       // --multiqc_logo, or []

    output:
    path("*multiqc_report.html"), emit: report
    path("*_data")              , emit: data
    path("*_plots")             , emit: plots, optional: true
    tuple val("${task.process}"), val('multiqc'), eval('python3 -c "import importlib.metadata as m; print(m.version(\'multiqc\'))"'), emit: versions

    when:
    task.ext.when == null || task.ext.when

    script:
    def args   = task.ext.args ?: ''
    def extra  = extra_multiqc_config ? "--config '${extra_multiqc_config}'" : ''
    def logo   = multiqc_logo ? "--cl-config 'custom_logo: \"${multiqc_logo}\"'" : ''
    """
    export HOME="\$PWD" XDG_CACHE_HOME="\$PWD/.cache" MPLCONFIGDIR="\$PWD/.config/matplotlib"
    multiqc \\
        --force \\
        --config '${multiqc_config}' \\
        ${extra} \\
        ${logo} \\
        ${args} \\
        .
    """

    stub:
    """
    mkdir multiqc_data
    touch multiqc_report.html
    """
}
