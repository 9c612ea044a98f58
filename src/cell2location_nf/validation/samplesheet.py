"""Read the samplesheet CSV and validate its rows against ``assets/schema_input.json``."""

from __future__ import annotations

import csv
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .schema import PATH_FORMATS, describe_error, iter_errors, resolve_path

log = logging.getLogger(__name__)


@dataclass
class Samplesheet:
    """Typed rows of a samplesheet plus the problems found while reading it."""

    path: Path
    columns: list[str]
    rows: list[dict[str, Any]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def where(self, index: int) -> str:
        """Name a row the way users see it in their editor (line numbers count the header)."""
        sample = self.rows[index].get("sample") if index < len(self.rows) else None
        label = f" (sample '{sample}')" if sample else ""
        return f"samplesheet '{self.path}' line {index + 2}{label}"


def _coerce(value: str, definition: dict[str, Any]) -> Any:
    """Turn CSV text into the JSON type the schema expects; leave it as text if it does not parse."""
    types = definition.get("type")
    types = types if isinstance(types, list) else [types]
    try:
        if "integer" in types and float(value).is_integer():
            return int(float(value))
        if "number" in types:
            return float(value)
    except ValueError:
        pass
    return value


def read_samplesheet(
    path: str | Path, schema: dict[str, Any], base_dir: Path, display_name: str | None = None
) -> Samplesheet:
    """Read and validate a samplesheet; problems are collected in ``.errors``, never raised one by one.

    ``display_name`` is the path users gave (a pipeline task reads a staged copy).
    """
    path = Path(path)
    item = schema["items"]
    properties = item["properties"]
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        columns = [c.strip() for c in (reader.fieldnames or [])]
        raw_rows = [
            {(k or "").strip(): (v or "").strip() for k, v in row.items()}
            for row in reader
            if any((v or "").strip() for v in row.values() if isinstance(v, str))
        ]
    sheet = Samplesheet(Path(display_name) if display_name else path, columns)
    path = sheet.path
    for column in item.get("required", []):
        if column not in columns:
            sheet.errors.append(
                f"samplesheet '{path}' has no column '{column}' (columns found: {', '.join(columns) or 'none'})"
            )
    unknown = [c for c in columns if c not in properties]
    if unknown:
        log.warning("samplesheet '%s': ignoring unknown column(s) %s", path, ", ".join(unknown))
    if not raw_rows:
        sheet.errors.append(f"samplesheet '{path}' has no sample rows")
    for raw in raw_rows:
        row: dict[str, Any] = {}
        for name, value in raw.items():
            if name not in properties or value == "":
                continue  # empty cells mean "not given", as in nf-schema
            definition = properties[name]
            row[name] = _coerce(value, definition)
            if definition.get("format") in PATH_FORMATS:
                row[name] = resolve_path(value, base_dir)
        sheet.rows.append(row)
    if sheet.errors:  # a missing column makes every row fail; report the cause once
        return sheet
    for error in iter_errors(schema, sheet.rows):
        location = list(error.absolute_path)
        if not location:
            sheet.errors.append(f"samplesheet '{path}': {describe_error(error)}")
            continue
        where = sheet.where(location[0])
        column = f": column '{location[1]}'" if len(location) > 1 else ""
        sheet.errors.append(f"{where}{column}: {describe_error(error)}")
    return sheet
