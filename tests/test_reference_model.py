"""Stage 1: the NB regression model recovers known signatures, is reproducible, and exports upstream's keys."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pyro
import pytest
import scipy.sparse as sp
import torch
from click.testing import CliRunner
from pyro import poutine

from cell2location_nf.cli import cli
from cell2location_nf.errors import InputError
from cell2location_nf.export.posterior import analytic_quantiles, parse_quantile_name, sampled_summaries
from cell2location_nf.models.guide import MeanFieldGuide
from cell2location_nf.models.reference import ReferenceDesign, ReferenceModel, expected_mean, max_epochs_heuristic
from cell2location_nf.preprocessing.gene_filter import GeneFilterCutoffs
from cell2location_nf.preprocessing.prepare import prepare_reference
from cell2location_nf.simulate.test_data import SyntheticDataConfig, make_test_data
from cell2location_nf.stages.reference import (
    ReferenceSettings,
    export_reference,
    load_reference,
    save_reference,
    train_reference,
)

from .conftest import make_adata

SITES = ["per_cluster_mu_fg", "detection_tech_gene_tg", "detection_mean_y_e", "s_g_gene_add_alpha_hyp",
         "s_g_gene_add_mean", "s_g_gene_add_alpha_e_inv", "s_g_gene_add", "alpha_g_phi_hyp", "alpha_g_inverse"]


@pytest.fixture(scope="module")
def prepared_reference(test_data, tmp_path_factory) -> ad.AnnData:
    out = tmp_path_factory.mktemp("ref")
    return prepare_reference(test_data / "reference.h5ad", "cell_type", "batch", ["chemistry"], None,
                             GeneFilterCutoffs(), out / "ref.h5ad", out / "filter.png")


@pytest.fixture(scope="module")
def short_run(prepared_reference):
    settings = ReferenceSettings(max_epochs=20, batch_size=500, seed=7)
    return train_reference(prepared_reference, "cell_type", "batch", ["chemistry"], settings)


def test_signatures_recover_the_true_profiles(tmp_path):
    """Batch effects (depth per batch, ambient RNA) and a chemistry covariate; >= 200 cells per type."""
    data = make_test_data(tmp_path / "data", SyntheticDataConfig(n_cells=4000, seed=3))
    ref = prepare_reference(data / "reference.h5ad", "cell_type", "batch", ["chemistry"], None,
                            GeneFilterCutoffs(), tmp_path / "ref.h5ad", tmp_path / "filter.png")
    assert ref.obs["cell_type"].value_counts().min() >= 200
    trained = train_reference(ref, "cell_type", "batch", ["chemistry"], ReferenceSettings(max_epochs=250))
    files = export_reference(trained, tmp_path / "out", num_samples=200)
    signatures = pd.read_csv(files["signatures"], index_col=0)
    truth = pd.read_csv(data / "truth" / "cell_type_profiles.csv", index_col=0).loc[signatures.index]
    for cell_type in truth.columns:
        expressed = truth[cell_type] > 0.1
        r = np.corrcoef(np.log(signatures.loc[expressed, cell_type]), np.log(truth.loc[expressed, cell_type]))[0, 1]
        assert r >= 0.95, (cell_type, r)


def test_initial_values_are_upstreams(prepared_reference):
    from cell2location_nf.models.reference import cluster_averages
    from cell2location_nf.stages.reference_design import build_design

    design = build_design(prepared_reference, "cell_type", "batch", ["chemistry"], 10, "ref")
    model = ReferenceModel(prepared_reference.n_obs, prepared_reference.n_vars, design)
    averages = torch.as_tensor(cluster_averages(prepared_reference.X, design.labels, design.n_factors),
                               dtype=torch.float32)
    x = torch.as_tensor(prepared_reference.X[:3].toarray())
    idx = torch.arange(3)
    init = model.initial_values(averages, (x, torch.as_tensor(design.labels[:3]), torch.as_tensor(design.batches[:3]),
                                           torch.as_tensor(design.covariates[:3]), idx))
    assert list(init) == SITES
    torch.testing.assert_close(init["per_cluster_mu_fg"], averages + 1e-4)
    expected = {"detection_tech_gene_tg": 1.0, "detection_mean_y_e": 1.0, "s_g_gene_add_alpha_hyp": 3.0,
                "s_g_gene_add_mean": 0.01, "s_g_gene_add_alpha_e_inv": 1 / 3, "s_g_gene_add": 0.01,
                "alpha_g_phi_hyp": 3.0, "alpha_g_inverse": 1 / 3}
    for site, value in expected.items():
        torch.testing.assert_close(init[site], torch.full_like(init[site], value))
    assert init["detection_tech_gene_tg"].shape == (2, prepared_reference.n_vars)
    assert init["s_g_gene_add"].shape == (2, prepared_reference.n_vars)
    guide = MeanFieldGuide(init)
    torch.testing.assert_close(guide.scale("alpha_g_inverse"), torch.full((1, prepared_reference.n_vars), 0.1))


def test_covariate_effects_are_summed_over_columns():
    g = torch.tensor([[1.0, 2.0]])
    s = torch.zeros(1, 2)
    y = torch.tensor([[2.0]])
    t = torch.tensor([[1.0, 1.0], [3.0, 5.0], [0.5, 0.25]])  # column 1 has levels 0-1, column 2 level 2
    mu = expected_mean(g, s, y, t, torch.tensor([0]), torch.tensor([0]), torch.tensor([[1, 2]]))
    torch.testing.assert_close(mu, torch.tensor([[1.0 * 2 * (3 + 0.5), 2.0 * 2 * (5 + 0.25)]]))


def test_minibatch_likelihood_is_scaled_to_the_full_data():
    design = ReferenceDesign(np.array([0, 1, 0, 1]), np.zeros(4, dtype=np.int64), np.zeros((4, 0), dtype=np.int64),
                             ["a", "b"], ["all"])
    model = ReferenceModel(n_obs=4, n_vars=3, design=design)
    x = torch.tensor([[1.0, 0.0, 2.0], [0.0, 3.0, 1.0]])
    args = (x, torch.tensor([0, 1]), torch.tensor([0, 0]), torch.zeros((2, 0), dtype=torch.long), torch.tensor([0, 1]))
    pyro.set_rng_seed(0)
    trace = poutine.trace(model).get_trace(*args)
    trace.compute_log_prob()
    site = trace.nodes["data_target"]
    assert site["scale"] == 2.0  # C / batch = 4 / 2
    assert site["fn"].batch_shape == (2, 3)


def test_same_seed_same_results(prepared_reference, short_run, tmp_path):
    again = train_reference(prepared_reference, "cell_type", "batch", ["chemistry"],
                            ReferenceSettings(max_epochs=20, batch_size=500, seed=7))
    for name, value in short_run.guide.state_dict().items():
        torch.testing.assert_close(again.guide.state_dict()[name], value, rtol=0, atol=0)
    assert again.history.elbo_train == short_run.history.elbo_train
    a = export_reference(short_run, tmp_path / "a", num_samples=30)
    b = export_reference(again, tmp_path / "b", num_samples=30)
    assert a["signatures"].read_text() == b["signatures"].read_text()


def test_grouped_training_keeps_no_copy_of_the_counts(prepared_reference, short_run, monkeypatch):
    """The grouped objective reads no count rows, so the batches hold no copy of them; training is the same
    as with the copy kept (the rows forced on), down to the last bit."""
    from cell2location_nf.stages import reference as stage

    built = []

    class RecordedBatches(stage._CellBatches):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            built.append(self)

    monkeypatch.setattr(stage, "_CellBatches", RecordedBatches)
    settings = ReferenceSettings(max_epochs=20, batch_size=500, seed=7)
    grouped = train_reference(prepared_reference, "cell_type", "batch", ["chemistry"], settings)
    assert not built[-1].with_rows and built[-1].x is None
    rows, *_ = next(built[-1](0))
    assert rows.shape == (500, 0)

    objective = stage.loss_function
    monkeypatch.setattr(stage, "loss_function", lambda *args: (objective(*args)[0], True))
    with_copy = train_reference(prepared_reference, "cell_type", "batch", ["chemistry"], settings)
    assert built[-1].with_rows and built[-1].x is not None
    for name, value in with_copy.guide.state_dict().items():
        torch.testing.assert_close(grouped.guide.state_dict()[name], value, rtol=0, atol=0)
    assert grouped.history.elbo_train == with_copy.history.elbo_train == short_run.history.elbo_train


@pytest.mark.parametrize(("batch_size", "epochs", "forced", "grouped", "compiled"), [
    (500, 10**6, None, True, False),   # summed per group: eager however long the run
    (500, 10**6, True, True, True),    # --compile forces it
    (None, 10**6, None, False, True),  # minibatches no larger than the groups: per cell; long run: compiled
    (None, 2, None, False, False),     # per cell, short run: eager
])
def test_only_a_long_per_cell_objective_compiles_by_default(prepared_reference, monkeypatch, batch_size, epochs,
                                                            forced, grouped, compiled):
    """Summed per design-row group the compiled pieces are types x genes and groups x genes, which saved 1–3 ms of
    a 43 ms step for 18–22 s of compiling on the benchmark (bench/RESULTS.md); the per-cell pass still pays."""
    from cell2location_nf.models.reference import cell_groups
    from cell2location_nf.stages import reference as stage
    from cell2location_nf.stages.reference_design import build_design

    monkeypatch.setattr(stage, "prepare_compile", lambda device: None)  # nothing is compiled here
    design = build_design(prepared_reference, "cell_type", "batch", ["chemistry"], 10, "reference")
    n_cells = prepared_reference.n_obs
    if batch_size is None:  # as many cells per step as groups: the objective runs per cell
        assert cell_groups(design).n_groups < n_cells
        batch_size = cell_groups(design).n_groups
    settings = ReferenceSettings(batch_size=batch_size, compile=forced)
    loss, reads_rows = stage.loss_function(settings, prepared_reference.X, design, epochs, torch.device("cpu"))
    assert reads_rows is not grouped
    assert loss.keywords["use_compile"] is compiled


@pytest.mark.parametrize("sparse", [False, True])
def test_example_rows_come_from_the_source_matrix(sparse):
    """The guide's example rows are read from the counts whether or not minibatches gather rows."""
    from cell2location_nf.stages.reference import _CellBatches

    counts = np.arange(12, dtype=np.float32).reshape(4, 3)
    design = ReferenceDesign(np.array([0, 1, 0, 1]), np.zeros(4, dtype=np.int64), np.zeros((4, 0), dtype=np.int64),
                             ["a", "b"], ["all"])
    x = sp.csr_matrix(counts) if sparse else counts
    for with_rows in (True, False):
        batches = _CellBatches(x, design, None, torch.device("cpu"), 0, with_rows)
        rows, labels, *_ = batches.example(2)
        torch.testing.assert_close(rows, torch.as_tensor(counts[:2]))
        torch.testing.assert_close(labels, torch.tensor([0, 1]))


def test_output_keys_match_upstream(short_run, tmp_path):
    files = export_reference(short_run, tmp_path, prefix="ref", num_samples=30)
    adata = ad.read_h5ad(files["h5ad"])
    types = short_run.design.factor_names
    for kind in ("means", "stds", "q05", "q95"):
        frame = adata.varm[f"{kind}_per_cluster_mu_fg"]
        assert list(frame.columns) == [f"{kind}_per_cluster_mu_fg_{t}" for t in types]
        assert frame.shape == (adata.n_vars, len(types))
    mod = adata.uns["mod"]
    assert {"model_name", "date", "factor_names", "var_names", "obs_names", "post_sample_means",
            "post_sample_stds", "post_sample_q05", "post_sample_q95"} <= set(mod)
    assert mod["model_name"] == "RegressionBackgroundDetectionTechPyroModel"
    assert list(mod["factor_names"]) == types
    assert set(mod["post_sample_means"]) == set(SITES)
    assert mod["post_sample_means"]["per_cluster_mu_fg"].shape == (len(types), adata.n_vars)
    signatures = pd.read_csv(files["signatures"], index_col=0)
    assert list(signatures.columns) == types and list(signatures.index) == list(adata.var_names)
    np.testing.assert_allclose(signatures.to_numpy(), adata.varm["means_per_cluster_mu_fg"].to_numpy(), rtol=1e-6)
    stds, q05, q95 = (adata.varm[f"{k}_per_cluster_mu_fg"].to_numpy() for k in ("stds", "q05", "q95"))
    assert (stds > 0).all() and (q05 < signatures.to_numpy()).all() and (signatures.to_numpy() < q95).all()
    for name in ("history", "reconstruction", "signature_vs_average"):
        assert files[name].read_bytes()[:4] == b"\x89PNG"


def test_quantile_export_path(short_run, tmp_path):
    files = export_reference(short_run, tmp_path, use_quantiles=True)
    adata = ad.read_h5ad(files["h5ad"])
    assert {k for k in adata.varm if k.endswith("per_cluster_mu_fg")} == {
        "q05_per_cluster_mu_fg", "q50_per_cluster_mu_fg", "q95_per_cluster_mu_fg"}
    median = np.exp(short_run.guide.locs["per_cluster_mu_fg"].detach().numpy()).T
    np.testing.assert_allclose(pd.read_csv(files["signatures"], index_col=0).to_numpy(), median, rtol=1e-5)


def test_analytic_quantiles_agree_with_sampling(short_run):
    sampled = sampled_summaries(short_run.guide, ["alpha_g_inverse"], num_samples=4000, seed=1)
    analytic = analytic_quantiles(short_run.guide, ["alpha_g_inverse"], ("q05", "q95"))
    for q in ("q05", "q95"):
        np.testing.assert_allclose(sampled[q]["alpha_g_inverse"], analytic[q]["alpha_g_inverse"], rtol=0.05)


def test_cli_reload_exports_identically(prepared_reference, tmp_path):
    prepared_reference.write_h5ad(tmp_path / "ref.h5ad")
    runner = CliRunner()
    trained = runner.invoke(cli, ["train-reference", "--reference", str(tmp_path / "ref.h5ad"), "--max-epochs", "5",
                                  "--num-samples", "20", "--outdir", str(tmp_path / "trained")])
    assert trained.exit_code == 0, trained.output
    model = tmp_path / "trained" / "reference.reference_model.h5"
    exported = runner.invoke(cli, ["export-reference", "--model", str(model), "--reference", str(tmp_path / "ref.h5ad"),
                                   "--num-samples", "20", "--outdir", str(tmp_path / "again")])
    assert exported.exit_code == 0, exported.output
    first = (tmp_path / "trained" / "reference.signatures.csv").read_text()
    assert first == (tmp_path / "again" / "reference.signatures.csv").read_text()
    a = ad.read_h5ad(tmp_path / "trained/reference.trained.h5ad")
    b = ad.read_h5ad(tmp_path / "again/reference.trained.h5ad")
    for site in SITES:
        np.testing.assert_array_equal(a.uns["mod"]["post_sample_q95"][site], b.uns["mod"]["post_sample_q95"][site])


def test_reload_refuses_other_data(short_run, prepared_reference, tmp_path):
    path = save_reference(short_run, tmp_path / "model.h5")
    with pytest.raises(InputError, match="other genes"):
        load_reference(path, prepared_reference[:, :-1].copy())


def _small_reference(counts=None, labels=None) -> ad.AnnData:
    rng = np.random.default_rng(0)
    counts = rng.poisson(2.0, size=(40, 8)).astype(float) if counts is None else counts
    labels = labels if labels is not None else ["a"] * 20 + ["b"] * 20
    return make_adata(counts, [f"g{i}" for i in range(8)], cell_type=labels, tech=["x"] * 40)


@pytest.mark.parametrize(
    ("value", "message"), [(np.nan, "NaN"), (-1.0, "negative"), (0.5, "not integers")]
)
def test_bad_counts_are_rejected(value, message):
    adata = _small_reference()
    adata.X = adata.X.toarray()
    adata.X[3, 2] = value
    with pytest.raises(InputError, match=message):
        train_reference(adata, "cell_type", None, [], ReferenceSettings(max_epochs=1), source="ref.h5ad")


def test_small_label_is_rejected():
    adata = _small_reference(labels=["a"] * 36 + ["rare"] * 4)
    with pytest.raises(InputError, match=r"'rare' \(4 cells\).*fewer than 10 cells"):
        train_reference(adata, "cell_type", None, [], ReferenceSettings(max_epochs=1), source="ref.h5ad")
    train_reference(adata, "cell_type", None, [], ReferenceSettings(max_epochs=1, min_cells_per_label=4))


def test_single_cell_type_is_rejected():
    with pytest.raises(InputError, match="single cell type"):
        train_reference(_small_reference(labels=["a"] * 40), "cell_type", None, [], ReferenceSettings(max_epochs=1))


def test_missing_covariate_column_is_rejected():
    with pytest.raises(InputError, match="'donor' do not exist"):
        train_reference(_small_reference(), "cell_type", None, ["donor"], ReferenceSettings(max_epochs=1))


def test_upstream_epoch_heuristic_and_quantile_names():
    assert max_epochs_heuristic(20_000) == 1000
    assert max_epochs_heuristic(100_000) == 200
    assert max_epochs_heuristic(50) == 1000
    assert [parse_quantile_name(n) for n in ("q05", "q50", "q001", "q5")] == [0.05, 0.5, 0.001, 0.5]
