/*
    Pipeline glue: --help/--version from the schema, the params file the validator checks, completion.
    Validation itself is a Python step (CELL2LOCATION_VALIDATE): no Nextflow plugin is needed.
*/

import groovy.json.JsonOutput
import groovy.json.JsonSlurper

workflow PIPELINE_INITIALISATION {

    main:
    if (params.version) {
        log.info "${workflow.manifest.name} ${workflow.manifest.version}"
        exit 0
    }
    if (params.help) {
        log.info helpText("${projectDir}/nextflow_schema.json", params.help instanceof String ? params.help : null)
        exit 0
    }

    // The resolved parameters, in a file named by its content so -resume keeps the validation cached.
    // trace_report_suffix is a fresh timestamp on every run; leaving it out keeps the file stable.
    def json        = JsonOutput.prettyPrint(JsonOutput.toJson(params.findAll { k, v -> k != 'trace_report_suffix' }))
    def params_file = file("${workflow.workDir}/pipeline_params/params_${json.md5()}.json")
    if (!params_file.exists()) {
        params_file.parent.mkdirs()
        params_file.text = json
    }
    def sheet = params.input && file(params.input).exists() ? file(params.input) : []

    emit:
    samplesheet     = channel.value(sheet)
    params_json     = channel.value(params_file)
    pipeline_schema = channel.value(file("${projectDir}/nextflow_schema.json"))
    input_schema    = channel.value(file("${projectDir}/assets/schema_input.json"))
}

workflow PIPELINE_COMPLETION {

    main:
    workflow.onComplete {
        completionSummary()
    }
}

def completionSummary() {
    if (workflow.success) {
        log.info "-[${workflow.manifest.name}] Pipeline completed successfully. Results are in: ${file(params.outdir).toAbsolutePath()}"
    } else {
        log.error "-[${workflow.manifest.name}] Pipeline completed with errors; see the messages above and .nextflow.log"
    }
}

/*
    --help: parameters grouped as in nextflow_schema.json; --help <param> shows one in full.
*/
def helpText(String schema_path, String only) {
    def schema = new JsonSlurper().parse(new File(schema_path))
    def lines  = ["", "Usage: nextflow run . -profile <docker|singularity|test> --input samplesheet.csv --reference ref.h5ad --outdir results", ""]
    schema['$defs'].each { group_name, group ->
        def shown = group.properties.findAll { name, p -> !p.hidden || params.show_hidden }
        if (only) {
            shown = shown.findAll { name, p -> name == only }
        }
        if (!shown) {
            return
        }
        lines << "${group.title}:"
        shown.each { name, p ->
            def dflt = p.containsKey('default') ? " [default: ${p.default}]" : ''
            def req  = (group.required ?: []).contains(name) ? ' (required)' : ''
            def enm  = p.enum ? " (${p.enum.join(', ')})" : ''
            lines << "  --${name.padRight(38)} ${p.description ?: ''}${req}${enm}${dflt}"
            if (only && p.help_text) {
                lines << "      ${p.help_text}"
            }
        }
        lines << ""
    }
    return lines.join("\n")
}
