"""JSON-schema validation (draft 2020-12) with the two nf-schema keywords our schemas use.

``exists`` checks that a path given with ``format: file-path|directory-path|path`` is there and of the
right kind; ``uniqueEntries`` (on an array of rows) checks that the named columns are unique across rows.
Everything else is standard JSON Schema, enforced by the ``jsonschema`` library.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
from jsonschema import Draft202012Validator, ValidationError

PATH_FORMATS = ("file-path", "directory-path", "path")


def load_schema(path: str | Path) -> dict[str, Any]:
    """Read a schema file and check that it is itself a valid draft 2020-12 schema."""
    schema = json.loads(Path(path).read_text())
    Draft202012Validator.check_schema(schema)
    return schema


def is_remote(value: str) -> bool:
    """Cloud or web URIs are staged by Nextflow; they cannot be checked from here."""
    return "://" in value


def resolve_path(value: str, base_dir: Path) -> str:
    """Make a local path absolute against ``base_dir`` (the launch directory); leave URIs alone."""
    if is_remote(value):
        return value
    path = Path(value).expanduser()
    return str(path if path.is_absolute() else (base_dir / path).resolve())


def _exists(validator, wanted: bool, instance: Any, schema: dict) -> Iterator[ValidationError]:
    if not wanted or not isinstance(instance, str) or is_remote(instance):
        return
    path = Path(instance)
    kind = schema.get("format", "path")
    if not path.exists():
        yield ValidationError(f"path '{instance}' does not exist")
    elif kind == "file-path" and not path.is_file():
        yield ValidationError(f"path '{instance}' is not a file")
    elif kind == "directory-path" and not path.is_dir():
        yield ValidationError(f"path '{instance}' is not a directory")


def _unique_entries(validator, columns: list[str], instance: Any, schema: dict) -> Iterator[ValidationError]:
    if not isinstance(instance, list):
        return
    seen: dict[tuple, int] = {}
    for index, row in enumerate(instance):
        if not isinstance(row, dict):
            continue
        key = tuple(row.get(c) for c in columns)
        if key in seen:
            shown = ", ".join(f"{c}={v!r}" for c, v in zip(columns, key, strict=True))
            error = ValidationError(f"duplicate {shown}: also used in entry {seen[key] + 1}")
            error.path.append(index)
            yield error
        else:
            seen[key] = index


SchemaValidator = jsonschema.validators.extend(
    Draft202012Validator, {"exists": _exists, "uniqueEntries": _unique_entries}
)


def describe_error(error: ValidationError) -> str:
    """Readable text of one error: the library's message, plus the schema's ``errorMessage`` if any."""
    custom = error.schema.get("errorMessage") if isinstance(error.schema, dict) else None
    if error.validator in ("oneOf", "anyOf") and custom:
        return custom
    if error.validator == "required":
        return error.message.replace("is a required property", "is required")
    if custom and error.validator != "exists":
        return f"{error.message} ({custom})"
    return error.message


def iter_errors(schema: dict[str, Any], instance: Any) -> list[ValidationError]:
    """All validation errors of ``instance``, in a stable order."""
    validator = SchemaValidator(schema)
    return sorted(validator.iter_errors(instance), key=lambda e: [str(p) for p in e.absolute_path])
