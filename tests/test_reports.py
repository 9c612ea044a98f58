"""QC notebook rendering, the MultiQC artefacts the notebooks write and the report's own sections."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib.pyplot as plt
import nbformat
import pytest
import yaml
from click.testing import CliRunner

from cell2location_nf.cli import cli
from cell2location_nf.reports.mqc import save_image_mqc, write_table_mqc
from cell2location_nf.reports.notebook import NotebookError, load_template, render_notebook
from cell2location_nf.reports.summary import notebooks_section, parameter_groups, write_report_sections

ROOT = Path(__file__).resolve().parents[1]

TEMPLATE = '''# %% [markdown]
# # A small QC notebook

# %% tags=["parameters"]
counts = "counts.csv"
artifact_dir = "artifacts"
sample = "s"

# %%
import pandas as pd
from cell2location_nf.reports.mqc import write_table_mqc

table = pd.read_csv(counts)
total = int(table["n"].sum())
print(f"total of {sample}: {total}")
write_table_mqc(artifact_dir, "small", "Small", "a test table", {sample: {"total": total}}, {"total": {}})
'''


@pytest.fixture
def template(tmp_path) -> Path:
    path = tmp_path / "small_qc.py"
    path.write_text(TEMPLATE)
    (tmp_path / "counts.csv").write_text("n\n1\n2\n39\n")
    return path


def test_render_notebook_injects_parameters_and_exports_html(template, tmp_path):
    out = tmp_path / "out"
    ipynb, html, artifacts = render_notebook(template, {"counts": str(tmp_path / "counts.csv"), "sample": "A1"},
                                             "small_qc", out)
    executed = nbformat.read(ipynb, as_version=4)
    outputs = "".join(o.get("text", "") for cell in executed.cells for o in cell.get("outputs", []))
    assert "total of A1: 42" in outputs
    page = html.read_text()
    assert "<html" in page and "total of A1: 42" in page and "A small QC notebook" in page
    assert "<script src=" not in page and "cdnjs" not in page  # opens offline: nothing fetched from a CDN
    table = yaml.safe_load((artifacts / "small_mqc.yaml").read_text())
    assert table["data"] == {"A1": {"total": 42}} and table["plot_type"] == "table"
    assert sorted(p.name for p in out.iterdir()) == ["small_qc.html", "small_qc.ipynb", "small_qc_artifacts"]


def test_failing_notebook_raises_its_own_error_and_leaves_nothing(template, tmp_path):
    out = tmp_path / "out"
    with pytest.raises(NotebookError) as error:
        render_notebook(template, {"counts": str(tmp_path / "missing.csv")}, "small_qc", out)
    message = str(error.value)
    assert "QC notebook 'small_qc' failed in cell" in message
    assert "FileNotFoundError" in message and "missing.csv" in message
    assert list(out.iterdir()) == []


def test_cli_render_notebook_exits_non_zero_with_the_notebook_error(template, tmp_path):
    params = tmp_path / "params.yml"
    params.write_text(json.dumps({"counts": str(tmp_path / "missing.csv"), "sample": "B"}))
    result = CliRunner().invoke(cli, ["render-notebook", "--template", str(template), "--name", "small_qc",
                                      "--params", str(params), "--outdir", str(tmp_path / "out")])
    assert result.exit_code == 1
    assert "FileNotFoundError" in result.output and "missing.csv" in result.output


def test_cli_render_notebook_takes_single_parameters(template, tmp_path):
    result = CliRunner().invoke(cli, ["render-notebook", "--template", str(template), "--name", "small_qc",
                                      "-p", "counts", str(tmp_path / "counts.csv"), "-p", "sample", "C",
                                      "--outdir", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    table = yaml.safe_load((tmp_path / "out" / "small_qc_artifacts" / "small_mqc.yaml").read_text())
    assert table["data"] == {"C": {"total": 42}}


def test_templates_have_a_parameters_cell_and_take_an_artifact_dir(tmp_path):
    for template in sorted((ROOT / "assets" / "notebooks").glob("*.py")):
        notebook = load_template(template)
        (parameters,) = [c for c in notebook.cells if "parameters" in c.metadata.get("tags", [])]
        assert "artifact_dir" in parameters.source and "cpus" in parameters.source, template.name
    bad = tmp_path / "bad.py"
    bad.write_text("# %%\nx = 1\n")
    with pytest.raises(ValueError, match="no cell tagged 'parameters'"):
        load_template(bad)


def test_image_artefact_is_a_named_section_with_the_png_embedded(tmp_path):
    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    path = save_image_mqc(fig, tmp_path, "sample_1 reconstruction", "a diagonal")
    plt.close(fig)
    text = path.read_text()
    header = yaml.safe_load(text.split("<!--\n", 1)[1].split("-->", 1)[0])
    assert path.name == "sample_1_reconstruction_mqc.html"
    assert header == {"id": "cell2location_sample_1_reconstruction", "section_name": "sample_1 reconstruction",
                      "description": "a diagonal"}
    assert 'src="data:image/png;base64,iVBORw0KGgo' in text  # base64 of the PNG signature


def test_table_artefact_keeps_numbers_plain(tmp_path):
    import numpy as np

    path = write_table_mqc(tmp_path, "t", "T", "d", {"s": {"a": np.float32(1.5), "b": np.int64(3)}}, {"a": {}})
    assert yaml.safe_load(path.read_text())["data"] == {"s": {"a": 1.5, "b": 3}}


def test_parameter_summary_groups_set_parameters_as_the_schema_does():
    schema = json.loads((ROOT / "nextflow_schema.json").read_text())
    params = {"input": "sheet.csv", "reference": "ref.h5ad", "outdir": "results", "batch_key": None,
              "map_schedule": "fast", "help": False, "trace_report_suffix": "x", "custom_thing": 3}
    groups = parameter_groups(params, schema)
    assert groups["Input/output options"] == {"input": "sheet.csv", "reference": "ref.h5ad", "outdir": "results"}
    assert groups["Spatial mapping model"] == {"map_schedule": "fast"}
    assert groups["Other parameters"] == {"custom_thing": 3}
    assert not any("help" in values or "trace_report_suffix" in values for values in groups.values())


def test_report_sections_link_notebooks_and_fill_the_methods(tmp_path):
    params = tmp_path / "params.json"
    params.write_text(json.dumps({"input": "s.csv", "reference": "r.h5ad", "outdir": "out"}))
    paths = write_report_sections(params, ROOT / "nextflow_schema.json",
                                  ROOT / "assets" / "methods_description_template.yml", "0.1.0", "25.04.4",
                                  "nextflow run . -profile test --outdir 'out'", ["reports/s1/s1_mapping_qc.html",
                                                                                  "reports/reference/reference_qc.html"],
                                  tmp_path)
    assert [p.name for p in paths] == ["workflow_summary_mqc.yaml", "methods_description_mqc.yaml",
                                       "notebooks_mqc.html"]
    methods = yaml.safe_load(paths[1].read_text())
    assert "cell2location-nf v0.1.0" in methods["data"] and "Nextflow v25.04.4" in methods["data"]
    assert "--outdir &#x27;out&#x27;" in methods["data"] and "${" not in methods["data"]
    for citation in ("Kleshchevnikov", "Bingham", "Wolf", "Virshup", "Di Tommaso", "Ewels"):
        assert citation in methods["data"]
    summary = yaml.safe_load(paths[0].read_text())
    assert summary["plot_type"] == "html" and "<samp>s.csv</samp>" in summary["data"]
    links = paths[2].read_text()
    assert links.index("reference_qc") < links.index("s1_mapping_qc")
    assert '<a href="../reports/s1/s1_mapping_qc.html">' in notebooks_section(["reports/s1/s1_mapping_qc.html"])
