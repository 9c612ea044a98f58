"""The MultiQC report's own sections: the parameter summary, the methods text and links to the notebooks.

Both the summary and ``--help`` come from ``nextflow_schema.json``, so they group and name parameters
the same way.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from string import Template

import yaml

from ..io.write import atomic_write

PIPELINE_ID = "cell2location-nf"
SKIPPED = {"help", "show_hidden", "version", "validate_params", "trace_report_suffix", "monochrome_logs"}


def parameter_groups(params: dict, schema: dict) -> dict[str, dict[str, object]]:
    """{group title: {param: value}} for every parameter of the run that is set, in schema order."""
    groups: dict[str, dict[str, object]] = {}
    known: set[str] = set()
    for group in schema.get("$defs", {}).values():
        names = list(group.get("properties", {}))
        known.update(names)
        values = {k: params[k] for k in names if k not in SKIPPED and params.get(k) not in (None, "", False)}
        if values:
            groups[group.get("title", "Other")] = values
    extra = {k: v for k, v in params.items() if k not in known and k not in SKIPPED and v not in (None, "", False)}
    if extra:
        groups["Other parameters"] = extra
    return groups


def summary_section(params: dict, schema: dict) -> dict:
    rows = []
    for title, values in parameter_groups(params, schema).items():
        rows.append(f"<dt><strong>{html.escape(title)}</strong></dt><dd></dd>")
        rows.extend(f"<dt>{html.escape(k)}</dt><dd><samp>{html.escape(str(v))}</samp></dd>" for k, v in values.items())
    return {
        "id": f"{PIPELINE_ID}-summary",
        "section_name": f"{PIPELINE_ID} workflow summary",
        "description": "The parameters this run was started with (those that are set).",
        "plot_type": "html",
        "data": f'<dl class="dl-horizontal">{"".join(rows)}</dl>',
    }


def methods_section(template_path: str | Path, version: str, nextflow_version: str, command_line: str) -> dict:
    """Render ``assets/methods_description_template.yml``: its ``data`` is HTML with ``$``-placeholders."""
    content = yaml.safe_load(Path(template_path).read_text())
    content["data"] = Template(content["data"]).safe_substitute(
        workflow_version=html.escape(version), nextflow_version=html.escape(nextflow_version),
        command_line=html.escape(command_line))
    return content


def notebooks_section(notebooks: list[str]) -> str:
    """An HTML section linking every notebook, relative to ``<outdir>/multiqc/multiqc_report.html``."""
    items = "".join(f'<li><a href="../{html.escape(path)}">{html.escape(Path(path).stem)}</a></li>'
                    for path in sorted(notebooks))
    header = yaml.safe_dump({
        "id": f"{PIPELINE_ID}-notebooks",
        "section_name": "QC notebooks",
        "description": "The executed notebooks, with every figure and table (HTML; the .ipynb lies beside each).",
    }, sort_keys=False)
    return f"<!--\n{header}-->\n<ul>{items}</ul>\n"


def write_report_sections(params_file: str | Path, schema_file: str | Path, methods_template: str | Path,
                          version: str, nextflow_version: str, command_line: str, notebooks: list[str],
                          outdir: str | Path) -> list[Path]:
    """Write ``workflow_summary_mqc.yaml``, ``methods_description_mqc.yaml`` and ``notebooks_mqc.html``."""
    outdir = Path(outdir)
    params = json.loads(Path(params_file).read_text())
    schema = json.loads(Path(schema_file).read_text())
    sections = {
        "workflow_summary_mqc.yaml": yaml.safe_dump(summary_section(params, schema), sort_keys=False),
        "methods_description_mqc.yaml": yaml.safe_dump(
            methods_section(methods_template, version, nextflow_version, command_line), sort_keys=False),
        "notebooks_mqc.html": notebooks_section(notebooks),
    }
    return [atomic_write(outdir / name, lambda tmp, text=text: tmp.write_text(text, encoding="utf-8"))
            for name, text in sections.items()]
