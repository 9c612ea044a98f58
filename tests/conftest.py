"""Shared fixtures: the synthetic test data, the real Space Ranger fixture and small builders."""

from __future__ import annotations

import shutil
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from cell2location_nf.io.spaceranger import read_positions
from cell2location_nf.simulate.test_data import SyntheticDataConfig, make_test_data

from .pipeline_runs import TEST_DATA, nextflow

ROOT = Path(__file__).resolve().parents[1]
SCANPY_VISIUM = ROOT / "tests" / "data" / "spaceranger_v1_scanpy"


@pytest.fixture(scope="session")
def test_data(tmp_path_factory) -> Path:
    """The test profile's synthetic data set, generated once per session."""
    return make_test_data(tmp_path_factory.mktemp("test_data"), SyntheticDataConfig())


@pytest.fixture(scope="session")
def test_profile_run(tmp_path_factory):
    """One `nextflow run . -profile test` shared by the pipeline and report tests: (workdir, result)."""
    if not (TEST_DATA / "samplesheet.csv").exists():
        make_test_data(TEST_DATA)
    workdir = tmp_path_factory.mktemp("pipeline")
    result = nextflow(["-profile", "test", "--outdir", "results"], workdir)
    assert result.returncode == 0, result.stdout + result.stderr
    return workdir, result


@pytest.fixture
def visium_v1(tmp_path) -> Path:
    """A writable copy of the real Space Ranger 1.0.0 fixture."""
    target = tmp_path / "outs"
    shutil.copytree(SCANPY_VISIUM, target)
    return target


@pytest.fixture
def fixture_positions() -> pd.DataFrame:
    return read_positions(SCANPY_VISIUM / "spatial" / "tissue_positions_list.csv")


def make_adata(counts: np.ndarray, genes: list[str], ids: list[str] | None = None, **obs) -> ad.AnnData:
    """A small AnnData with the given counts (cells x genes) and obs columns."""
    var = pd.DataFrame(index=genes)
    if ids is not None:
        var["gene_ids"] = ids
    obs_df = pd.DataFrame(obs, index=[f"c{i}" for i in range(counts.shape[0])])
    return ad.AnnData(X=sp.csr_matrix(counts.astype(np.float32)), obs=obs_df, var=var)
