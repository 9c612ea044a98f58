"""``render-notebook`` and ``report-summary``: the QC notebooks and the MultiQC report's own sections."""

from __future__ import annotations

from pathlib import Path

import click
import yaml

from ..reports.notebook import NotebookError, render_notebook
from ..reports.summary import write_report_sections


@click.command("render-notebook")
@click.option("--template", type=click.Path(exists=True, dir_okay=False), required=True,
              help="Notebook template (jupytext .py or .ipynb) with a cell tagged 'parameters'.")
@click.option("--name", required=True, help="Output name: <name>.ipynb, <name>.html, <name>_artifacts/.")
@click.option("--params", "params_file", type=click.Path(exists=True, dir_okay=False), default=None,
              help="YAML or JSON file of notebook parameters.")
@click.option("-p", "--param", "pairs", type=(str, str), multiple=True, help="One parameter (repeatable).")
@click.option("--outdir", type=click.Path(file_okay=False), default=".", show_default=True)
@click.option("--timeout", type=int, default=None, help="Seconds one cell may run (default: no limit).")
def render_notebook_cmd(template, name, params_file, pairs, outdir, timeout) -> None:
    """Execute a QC notebook with papermill and export it to HTML; a failing cell fails the command."""
    parameters = yaml.safe_load(Path(params_file).read_text()) if params_file else {}
    parameters.update({key: yaml.safe_load(value) for key, value in pairs})
    try:
        ipynb, html, artifacts = render_notebook(template, parameters, name, outdir, timeout)
    except NotebookError as error:
        raise click.ClickException(str(error)) from error
    click.echo(f"Notebook {name}: {html}, {ipynb}, {artifacts}/")


@click.command("report-summary")
@click.option("--params", "params_file", type=click.Path(exists=True, dir_okay=False), required=True,
              help="The run's resolved parameters (JSON).")
@click.option("--schema", type=click.Path(exists=True, dir_okay=False), required=True,
              help="nextflow_schema.json: groups and titles the parameters.")
@click.option("--methods-template", type=click.Path(exists=True, dir_okay=False), required=True,
              help="assets/methods_description_template.yml")
@click.option("--version", "pipeline_version", required=True, help="Pipeline version.")
@click.option("--nextflow-version", required=True)
@click.option("--command-line", default="", help="The nextflow command line of this run.")
@click.option("--notebook", "notebooks", multiple=True, help="Published path of a notebook's HTML, relative "
              "to the output folder (repeatable).")
@click.option("--outdir", type=click.Path(file_okay=False), default=".", show_default=True)
def report_summary_cmd(params_file, schema, methods_template, pipeline_version, nextflow_version, command_line,
                       notebooks, outdir) -> None:
    """Write the MultiQC sections of the run: parameter summary, methods and links to the notebooks."""
    for path in write_report_sections(params_file, schema, methods_template, pipeline_version, nextflow_version,
                                      command_line, list(notebooks), outdir):
        click.echo(str(path))
