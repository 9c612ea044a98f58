"""Validate the resolved pipeline parameters against ``nextflow_schema.json``."""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

from .schema import PATH_FORMATS, describe_error, iter_errors, resolve_path


def schema_properties(schema: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """All parameter definitions of an nf-core style schema (grouped under ``$defs``)."""
    props = dict(schema.get("properties", {}))
    for group in schema.get("$defs", {}).values():
        props.update(group.get("properties", {}))
    return props


def validate_params(params: dict[str, Any], schema: dict[str, Any], base_dir: Path) -> list[str]:
    """Return every problem with ``params``: unknown names, wrong types or values, missing files.

    Null values mean "unset", as in nf-schema, so optional parameters may stay null in the config.
    """
    known = schema_properties(schema)
    errors = []
    for name in sorted(params):
        if name not in known:
            close = difflib.get_close_matches(name, known, n=1)
            hint = f"; did you mean '--{close[0]}'?" if close else "; see --help for the parameters"
            errors.append(f"unknown parameter '--{name}'{hint}")
    values = {k: v for k, v in params.items() if k in known and v is not None}
    for name, definition in known.items():
        if definition.get("format") in PATH_FORMATS and isinstance(values.get(name), str):
            values[name] = resolve_path(values[name], base_dir)
    for error in iter_errors(schema, values):
        if error.validator == "required":
            missing = error.message.split("'")[1]
            errors.append(f"parameter '--{missing}' is required")
            continue
        name = next(iter(error.absolute_path), None)
        where = f"parameter '--{name}'" if name else "parameters"
        errors.append(f"{where}: {describe_error(error)}")
    return errors
