"""The test profile's QC notebooks and MultiQC report: published, executed, and sound in a real browser."""

from __future__ import annotations

import shutil
from pathlib import Path

import nbformat
import pandas as pd
import pytest

from .pipeline_runs import ROOT, nextflow

pytestmark = pytest.mark.pipeline

SAMPLES = ("sample_1", "sample_2")
SCREENSHOTS = ROOT / "build" / "test-screenshots"
NOTEBOOKS = {"reference/reference_qc": ["Gene filter", "Cells per cell type and batch", "Training history",
                                        "Reconstruction", "Signatures against cluster averages"],
             **{f"{s}/{s}_mapping_qc": ["Training history", "Reconstruction", "Spatial QC across batches",
                                        "Abundance of the most abundant cell types", "Mean abundance per cell type"]
                for s in SAMPLES}}
REPORT_SECTIONS = ["QC notebooks", "Reference training", "Mapping per sample", "reference training history",
                   "reference reconstruction", *[f"{s} {kind}" for s in SAMPLES for kind in
                                                 ("cell abundance", "spatial QC", "reconstruction")],
                   "Software Versions", "cell2location-nf methods description", "cell2location-nf workflow summary"]


def test_notebooks_are_published_executed_and_without_errors(test_profile_run):
    workdir, _ = test_profile_run
    reports = workdir / "results" / "reports"
    for name, headings in NOTEBOOKS.items():
        notebook = nbformat.read(reports / f"{name}.ipynb", as_version=4)
        code = [c for c in notebook.cells if c.cell_type == "code"]
        assert all(c.execution_count for c in code), name
        outputs = [o for c in code for o in c.outputs]
        assert not [o for o in outputs if o.output_type == "error"], name
        assert sum("image/png" in o.get("data", {}) for o in outputs) >= 3, name
        html = (reports / f"{name}.html").read_text()
        for heading in headings:
            assert f">{heading}<" in html, (name, heading)


def test_multiqc_tables_hold_every_sample(test_profile_run):
    workdir, _ = test_profile_run
    data = workdir / "results" / "multiqc" / "multiqc_data"
    mapping = pd.read_csv(data / "multiqc_cell2location_mapping_table.txt", sep="\t", index_col=0)
    assert list(mapping.index) == list(SAMPLES)
    assert (mapping["spots"] == 144).all() and (mapping["reconstruction_pearson"] > 0.3).all()
    assert ((mapping["total_cells"] > 0) & (mapping["median_umis"] > 0)).all()
    reference = pd.read_csv(data / "multiqc_cell2location_reference_table.txt", sep="\t", index_col=0)
    assert list(reference.index) == ["reference"] and reference.loc["reference", "epochs"] == 30


def _open_in_chromium(page_path: Path, screenshot: Path) -> tuple[str, list[int], list[str]]:
    """Load a page in headless Debian Chromium; return its text, the natural widths of its images and any
    JavaScript errors (uncaught exceptions and console errors)."""
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    assert chromium, "Chromium is missing: `make browser` installs Debian's chromium package"
    errors: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-first-run"])
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.on("pageerror", lambda error: errors.append(f"pageerror: {error}"))
        page.on("console", lambda message: errors.append(f"console: {message.text}")
                if message.type == "error" else None)
        page.goto(page_path.as_uri(), wait_until="load")
        page.wait_for_timeout(1500)  # let the report's scripts draw tables and plots
        text = page.inner_text("body")
        widths = page.eval_on_selector_all("img", "images => images.map(i => i.complete ? i.naturalWidth : 0)")
        screenshot.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(screenshot), full_page=True)
        browser.close()
    return text, widths, errors


def test_multiqc_report_in_a_browser(test_profile_run):
    workdir, _ = test_profile_run
    report = workdir / "results" / "multiqc" / "multiqc_report.html"
    screenshot = SCREENSHOTS / "multiqc_report.png"
    text, widths, errors = _open_in_chromium(report, screenshot)
    assert errors == []
    for section in REPORT_SECTIONS:
        assert section in text, section
    assert "Kleshchevnikov" in text and "map_schedule" in text and "papermill" in text
    assert len(widths) >= 8 and all(w > 100 for w in widths[-8:])  # the 8 notebook figures rendered
    assert screenshot.stat().st_size > 50_000
    html = report.read_text()
    for name in NOTEBOOKS:  # the links resolve to the published notebooks
        assert f'href="../reports/{name}.html"' in html
        assert (report.parent / f"../reports/{name}.html").resolve().exists()


def test_notebook_html_in_a_browser(test_profile_run):
    workdir, _ = test_profile_run
    page = workdir / "results" / "reports" / "sample_1" / "sample_1_mapping_qc.html"
    text, widths, errors = _open_in_chromium(page, SCREENSHOTS / "sample_1_mapping_qc.png")
    assert errors == []
    for heading in NOTEBOOKS["sample_1/sample_1_mapping_qc"]:
        assert heading in text
    assert len(widths) == 4 and all(w > 100 for w in widths)  # history, reconstruction, spatial QC, abundance


def test_failing_notebook_fails_its_task_with_the_notebook_error(tmp_path):
    result = nextflow([], tmp_path, pipeline=ROOT / "tests" / "nextflow" / "notebook_failure" / "main.nf")
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "CELL2LOCATION_NOTEBOOK (sample_1_mapping_qc)" in output
    assert "QC notebook 'sample_1_mapping_qc' failed in cell" in output
    assert "FileNotFoundError" in output and "no_such_sample.mapped.h5ad" in output
    published = list((tmp_path / "work").rglob("sample_1_mapping_qc.html"))
    assert published == []
