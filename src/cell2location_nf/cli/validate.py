"""``validate``: the pipeline's first, light step."""

from __future__ import annotations

import json
from pathlib import Path

import click

from ..validation.inputs import validate_inputs, write_validated_samplesheet


@click.command("validate")
@click.option("--params", "params_file", type=click.Path(exists=True, dir_okay=False), required=True,
              help="JSON file with the resolved pipeline parameters.")
@click.option("--samplesheet", type=click.Path(dir_okay=False), default=None,
              help="Samplesheet CSV (default: the 'input' parameter).")
@click.option("--pipeline-schema", type=click.Path(exists=True, dir_okay=False), required=True,
              help="nextflow_schema.json")
@click.option("--input-schema", type=click.Path(exists=True, dir_okay=False), required=True,
              help="assets/schema_input.json")
@click.option("--base-dir", type=click.Path(file_okay=False), default=".", show_default=True,
              help="Directory relative paths are resolved against (the launch directory).")
@click.option("--output", type=click.Path(dir_okay=False), default="validated_samplesheet.csv", show_default=True)
def validate_cmd(params_file, samplesheet, pipeline_schema, input_schema, base_dir, output) -> None:
    """Validate parameters, samplesheet and inputs; write the samplesheet with absolute paths."""
    params = json.loads(Path(params_file).read_text())
    rows = validate_inputs(params, pipeline_schema, input_schema, base_dir, samplesheet)
    write_validated_samplesheet(rows, output)
    click.echo(f"Validated {len(rows)} samples -> {output}")
