"""Small MultiQC custom-content files that the QC notebooks write beside themselves.

MultiQC picks up any file whose name ends in ``_mqc`` before the extension
(https://docs.seqera.io/multiqc/custom_content): a YAML table here, and each figure as a PNG embedded in
an HTML snippet whose header names its section. (A bare ``_mqc.png`` gets a section name derived from
the file name, which MultiQC trims with ``str.rstrip``, eating trailing letters.) Tables from several
notebooks that share an ``id`` are merged into one, a row per sample.
"""

from __future__ import annotations

import base64
import html
import io
import re
from pathlib import Path

import yaml
from matplotlib.figure import Figure

from ..io.write import atomic_write


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_").lower()


def write_table_mqc(artifact_dir: str | Path, table_id: str, section_name: str, description: str,
                    rows: dict[str, dict], headers: dict[str, dict], name: str | None = None) -> Path:
    """A MultiQC table section: ``rows`` maps a sample name to its metrics; ``headers`` titles the columns."""
    content = {
        "id": table_id,
        "section_name": section_name,
        "description": description,
        "plot_type": "table",
        "pconfig": {"id": f"{table_id}_table", "title": section_name, "col1_header": "Sample"},
        "headers": headers,
        "data": {sample: {k: _plain(v) for k, v in metrics.items()} for sample, metrics in rows.items()},
    }
    path = Path(artifact_dir) / f"{name or table_id}_mqc.yaml"
    return atomic_write(path, lambda tmp: tmp.write_text(yaml.safe_dump(content, sort_keys=False)))


def save_image_mqc(fig: Figure, artifact_dir: str | Path, name: str, description: str = "", dpi: int = 100) -> Path:
    """A figure as ``<name>_mqc.html``: one MultiQC section titled ``name`` showing the PNG."""
    buffer = io.BytesIO()
    fig.savefig(buffer, dpi=dpi, format="png", bbox_inches="tight")
    image = base64.b64encode(buffer.getvalue()).decode("ascii")
    header = yaml.safe_dump({"id": f"cell2location_{_slug(name)}", "section_name": name,
                             "description": description}, sort_keys=False)
    snippet = (f"<!--\n{header}-->\n<div class=\"mqc-custom-content-image\">"
               f"<img src=\"data:image/png;base64,{image}\" alt=\"{html.escape(name)}\" /></div>\n")
    path = Path(artifact_dir) / f"{_slug(name)}_mqc.html"
    return atomic_write(path, lambda tmp: tmp.write_text(snippet, encoding="utf-8"))


def _plain(value):
    """numpy scalars to Python numbers, so that the YAML stays plain."""
    return value.item() if hasattr(value, "item") else value
