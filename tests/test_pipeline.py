"""End to end: `nextflow run . -profile test` on the bundled synthetic data, and bad input stopping early."""

from __future__ import annotations

import json
import re

import anndata as ad
import pandas as pd
import pytest
import yaml

from cell2location_nf.inference.allocator import TCACHE_OFF
from cell2location_nf.simulate.test_data import make_test_data

from .pipeline_runs import TEST_DATA, nextflow, trace_rows

pytestmark = pytest.mark.pipeline


def test_test_profile_publishes_prepared_data(test_profile_run):
    workdir, result = test_profile_run
    outdir = workdir / "results"
    assert f"Results are in: {outdir}" in result.stdout
    reference = ad.read_h5ad(outdir / "reference" / "reference.prepared.h5ad")
    assert reference.uns["cell2location_nf"]["batch_key"] == "batch"
    assert (outdir / "reference" / "reference.gene_filter.png").read_bytes()[:4] == b"\x89PNG"
    for sample in ("sample_1", "sample_2"):
        spatial = ad.read_h5ad(outdir / "spatial" / sample / f"{sample}.prepared.h5ad")
        assert set(spatial.var_names) <= set(reference.var_names)
        assert "MT" in spatial.obsm and "spatial" in spatial.obsm
        assert spatial.uns["cell2location_nf"]["n_cells_per_location"] == 9.0
        assert sample in spatial.uns["spatial"]


def test_test_profile_publishes_reference_signatures(test_profile_run):
    workdir, _ = test_profile_run
    outdir = workdir / "results" / "reference"
    signatures = pd.read_csv(outdir / "reference.signatures.csv", index_col=0)
    trained = ad.read_h5ad(outdir / "reference.trained.h5ad")
    assert list(signatures.columns) == [f"type_{i}" for i in range(1, 7)]
    assert list(signatures.index) == list(trained.var_names)
    assert "means_per_cluster_mu_fg" in trained.varm and trained.uns["mod"]["factor_names"].tolist() == list(
        signatures.columns)
    summary = json.loads((outdir / "reference.training_summary.json").read_text())
    assert summary["epochs"] == 30 and summary["device"] == "cpu"
    for name in ("elbo_history", "reconstruction", "signature_vs_average"):
        assert (outdir / f"reference.{name}.png").read_bytes()[:4] == b"\x89PNG"
    assert (outdir / "reference.reference_model.h5").stat().st_size > 0


def test_test_profile_publishes_mapping(test_profile_run):
    workdir, _ = test_profile_run
    outdir = workdir / "results" / "mapping"
    types = [f"type_{i}" for i in range(1, 7)]
    for sample in ("sample_1", "sample_2"):
        mapped = ad.read_h5ad(outdir / sample / f"{sample}.mapped.h5ad")
        assert list(mapped.obsm["q05_cell_abundance_w_sf"].columns) == [f"q05cell_abundance_w_sf_{t}" for t in types]
        assert set(mapped.obs["sample"]) == {sample} and sample in mapped.uns["spatial"]
        means = pd.read_csv(outdir / sample / f"{sample}.cell_abundance_means.csv", index_col=0)
        assert list(means.columns) == ["barcode", *types] and len(means) == mapped.n_obs == 144
        assert (outdir / sample / f"{sample}.cell_abundance_q05.csv").exists()
    summary = json.loads((outdir / "mapping.training_summary.json").read_text())
    assert summary["epochs"] == 300 and summary["locations"] == 288
    for name in ("elbo_history", "reconstruction", "spatial_qc"):
        assert (outdir / f"mapping.{name}.png").read_bytes()[:4] == b"\x89PNG"


def test_pipeline_info_reports(test_profile_run):
    workdir, _ = test_profile_run
    info = workdir / "results" / "pipeline_info"
    for pattern in ("execution_report_*.html", "execution_timeline_*.html", "execution_trace_*.txt",
                    "pipeline_dag_*.html"):
        assert list(info.glob(pattern)), pattern
    versions = yaml.safe_load((info / "cell2location_nf_software_mqc_versions.yml").read_text())
    assert versions["CELL2LOCATION_PREPAREREFERENCE"] == {"cell2location-nf": "0.1.0"}
    assert set(versions["CELL2LOCATION_TRAINREFERENCE"]) == {"cell2location-nf", "torch", "pyro-ppl", "cuda"}
    assert set(versions["MAPPING_QC_NOTEBOOK"]) == {"cell2location-nf", "papermill", "nbconvert", "jupytext"}
    assert set(versions["Workflow"]) == {"Nextflow", "cell2location-nf"}
    rows = trace_rows(workdir / "results")
    assert sorted(r["name"].split(" ")[0].split(":")[-1] for r in rows) == [
        "CELL2LOCATION_MAP", "CELL2LOCATION_PREPAREREFERENCE", "CELL2LOCATION_PREPARESPATIAL",
        "CELL2LOCATION_PREPARESPATIAL", "CELL2LOCATION_REPORTSUMMARY", "CELL2LOCATION_TRAINREFERENCE",
        "CELL2LOCATION_VALIDATE", "MAPPING_QC_NOTEBOOK", "MAPPING_QC_NOTEBOOK", "MULTIQC", "REFERENCE_QC_NOTEBOOK",
    ]
    assert {r["status"] for r in rows} == {"COMPLETED"}


def test_the_mapping_task_starts_with_glibcs_per_thread_cache_off(test_profile_run):
    workdir, _ = test_profile_run
    (mapping,) = [r for r in trace_rows(workdir / "results") if ":CELL2LOCATION_MAP (" in r["name"]]
    (taskdir,) = (workdir / "work").glob(mapping["hash"] + "*")
    assert re.search(r'export GLIBC_TUNABLES="?' + re.escape(TCACHE_OFF), (taskdir / ".command.run").read_text())


def test_adding_a_sample_with_resume_reuses_the_reference(test_profile_run):
    workdir, _ = test_profile_run
    sheet = workdir / "three_samples.csv"
    lines = (TEST_DATA / "samplesheet.csv").read_text().splitlines()
    sheet.write_text("\n".join([*lines, lines[1].replace("sample_1,", "sample_3,", 1)]) + "\n")
    # Its own outdir keeps the shared run's results as they were for the report tests; the cache is the same.
    result = nextflow(["-profile", "test", "--outdir", "results_three", "--input", str(sheet), "-resume"], workdir)
    assert result.returncode == 0, result.stdout + result.stderr
    rows = {r["name"]: r["status"] for r in trace_rows(workdir / "results_three")}
    assert rows["CELL2LOCATION_NF:CELL2LOCATION:CELL2LOCATION_PREPAREREFERENCE (reference)"] == "CACHED"
    assert rows["CELL2LOCATION_NF:CELL2LOCATION:CELL2LOCATION_TRAINREFERENCE (reference)"] == "CACHED"
    assert rows["CELL2LOCATION_NF:CELL2LOCATION:CELL2LOCATION_PREPARESPATIAL (sample_1)"] == "CACHED"
    assert rows["CELL2LOCATION_NF:CELL2LOCATION:CELL2LOCATION_PREPARESPATIAL (sample_3)"] == "COMPLETED"
    assert rows["CELL2LOCATION_NF:CELL2LOCATION:REFERENCE_QC_NOTEBOOK (reference_qc)"] == "CACHED"
    assert rows["CELL2LOCATION_NF:CELL2LOCATION:MAPPING_QC_NOTEBOOK (sample_3_mapping_qc)"] == "COMPLETED"
    assert (workdir / "results_three" / "reports" / "sample_3" / "sample_3_mapping_qc.html").exists()


def test_bad_input_stops_before_any_other_task(tmp_path):
    if not (TEST_DATA / "samplesheet.csv").exists():
        make_test_data(TEST_DATA)
    sheet = tmp_path / "bad.csv"
    sheet.write_text("sample,spaceranger_dir\n"
                     f"s1,{TEST_DATA}/sample_1/outs\ns1,{TEST_DATA}/sample_2/outs\ns3,/no/such/outs\n")
    result = nextflow(["-profile", "test", "--outdir", "results", "--input", str(sheet), "--n_cells_per_spot", "8"],
                      tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "Input validation failed (3 problems)" in output
    assert "unknown parameter '--n_cells_per_spot'" in output
    assert "duplicate sample='s1'" in output
    assert "path '/no/such/outs' does not exist" in output
    outdir = tmp_path / "results"
    assert not (outdir / "reference").exists() and not (outdir / "spatial").exists()
    assert [r["status"] for r in trace_rows(outdir)] == ["FAILED"]


def test_help_lists_parameters_from_the_schema(tmp_path):
    result = nextflow(["--help"], tmp_path)
    assert result.returncode == 0
    assert "--gene_filter_nonz_mean_cutoff" in result.stdout and "[default: 1.12]" in result.stdout
    assert "--input" in result.stdout and "(required)" in result.stdout
