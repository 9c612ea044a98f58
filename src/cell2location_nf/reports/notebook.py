"""Execute a jupytext notebook template with papermill and export it to HTML.

Templates live in ``assets/notebooks`` as py:percent scripts so that they review well in git; the first
cell tagged ``parameters`` holds the defaults that papermill overrides.
"""

from __future__ import annotations

import logging
import re
import shutil
from pathlib import Path

import jupytext
import nbformat
import papermill
from nbconvert import HTMLExporter
from papermill.exceptions import PapermillExecutionError

from ..io.write import atomic_write

log = logging.getLogger(__name__)

KERNEL = "python3"
TEMPLATES = Path(__file__).parent / "templates"
HTML_TEMPLATE = "selfcontained"  # JupyterLab's look, no scripts from a CDN


class NotebookError(RuntimeError):
    """A cell of the notebook raised: the message carries the notebook's own error and traceback."""


def load_template(template: str | Path) -> nbformat.NotebookNode:
    """Read a jupytext script (or an .ipynb) into a notebook without outputs."""
    notebook = jupytext.read(template)
    if not any("parameters" in cell.get("metadata", {}).get("tags", []) for cell in notebook.cells):
        raise ValueError(f"notebook template '{template}' has no cell tagged 'parameters'")
    notebook.metadata.setdefault("kernelspec", {"name": KERNEL, "display_name": "Python 3", "language": "python"})
    notebook.metadata.setdefault("language_info", {"name": "python"})
    return notebook


ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def _error_message(name: str, error: PapermillExecutionError) -> str:
    """The failing cell's error and traceback, without the terminal colours IPython adds."""
    trace = ANSI_ESCAPE.sub("", "\n".join(error.traceback or []))
    summary = f"QC notebook '{name}' failed in cell {error.exec_count}: {error.ename}: {error.evalue}"
    # The summary goes last too: schedulers and Nextflow show the tail of a failed task's stderr.
    return f"{summary}\n{trace.rstrip()}\n{summary}"


def render_notebook(template: str | Path, parameters: dict, name: str, outdir: str | Path,
                    timeout_s: int | None = None) -> tuple[Path, Path, Path]:
    """Run the template with ``parameters`` in ``outdir``; write ``<name>.ipynb``, ``<name>.html`` and
    ``<name>_artifacts/`` (the small files the notebook saves for MultiQC under ``artifact_dir``).

    On a failing cell nothing is left behind and :class:`NotebookError` carries the cell's error.
    """
    outdir = Path(outdir).resolve()
    outdir.mkdir(parents=True, exist_ok=True)
    notebook = load_template(template)
    executing = outdir / f".{name}.executing.ipynb"
    partial_artifacts = outdir / f".{name}.artifacts"
    shutil.rmtree(partial_artifacts, ignore_errors=True)
    partial_artifacts.mkdir()
    parameters = {**parameters, "artifact_dir": str(partial_artifacts)}
    try:
        executed = papermill.execute_notebook(
            notebook, str(executing), parameters=parameters, kernel_name=KERNEL, cwd=str(outdir),
            progress_bar=False, log_output=log.isEnabledFor(logging.DEBUG), execution_timeout=timeout_s,
        )
        html, _ = HTMLExporter(template_name=HTML_TEMPLATE, extra_template_basedirs=[str(TEMPLATES)]
                               ).from_notebook_node(executed)
    except PapermillExecutionError as error:
        shutil.rmtree(partial_artifacts, ignore_errors=True)
        raise NotebookError(_error_message(name, error)) from error
    except BaseException:
        shutil.rmtree(partial_artifacts, ignore_errors=True)
        raise
    finally:
        executing.unlink(missing_ok=True)
    artifacts = outdir / f"{name}_artifacts"
    shutil.rmtree(artifacts, ignore_errors=True)
    partial_artifacts.rename(artifacts)
    ipynb = atomic_write(outdir / f"{name}.ipynb", lambda tmp: nbformat.write(executed, str(tmp)))
    page = atomic_write(outdir / f"{name}.html", lambda tmp: tmp.write_text(html, encoding="utf-8"))
    log.info("Rendered %s and %s", ipynb, page)
    return ipynb, page, artifacts
