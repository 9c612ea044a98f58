"""The pipeline's first step: validate parameters, samplesheet and file contents, all errors at once."""

from __future__ import annotations

import csv
import logging
from pathlib import Path
from typing import Any

from ..errors import InputError, format_errors
from ..io.write import atomic_write
from .content import check_reference, check_samples
from .params import validate_params
from .samplesheet import read_samplesheet
from .schema import load_schema, resolve_path

log = logging.getLogger(__name__)

VALIDATED_COLUMNS = ["sample", "spaceranger_dir", "h5ad", "batch", "n_cells_per_location", "hd_bin_size"]


def validate_inputs(
    params: dict[str, Any],
    pipeline_schema: str | Path,
    input_schema: str | Path,
    base_dir: str | Path,
    samplesheet: str | Path | None = None,
) -> list[dict[str, Any]]:
    """Validate everything and return the typed samplesheet rows; raise one :class:`InputError` listing
    every problem otherwise. ``samplesheet`` defaults to ``params['input']``."""
    base_dir = Path(base_dir)
    errors = validate_params(params, load_schema(pipeline_schema), base_dir)
    params = {k: v for k, v in params.items() if v is not None}
    for key in ("input", "reference"):
        if isinstance(params.get(key), str):
            params[key] = resolve_path(params[key], base_dir)
    sheet_path = Path(samplesheet) if samplesheet else Path(params.get("input", ""))
    rows: list[dict[str, Any]] = []
    if sheet_path.is_file():
        sheet = read_samplesheet(sheet_path, load_schema(input_schema), base_dir, params.get("input"))
        errors += sheet.errors
        rows = sheet.rows
        reference_problems, reference_var = check_reference(params)
        errors += reference_problems
        if not sheet.errors:  # only look inside files that passed the schema (they exist)
            where = [sheet.where(i) for i in range(len(rows))]
            errors += check_samples(rows, where, reference_var, params)
    if errors:
        raise InputError(format_errors("Input validation failed", errors))
    log.info("Validated %d parameters and %d samples", len(params), len(rows))
    return rows


def write_validated_samplesheet(rows: list[dict[str, Any]], path: str | Path) -> Path:
    """Write the rows with absolute paths and every optional column present (empty when not given)."""

    def write(tmp: Path) -> None:
        with tmp.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=VALIDATED_COLUMNS, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)

    return atomic_write(path, write)
