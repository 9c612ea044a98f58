"""Stage 2: the mapping model recovers planted abundances, matches upstream's initialisation and keys."""

from __future__ import annotations

import json
import logging
import zlib

import anndata as ad
import numpy as np
import pandas as pd
import pyro
import pytest
import scipy.sparse as sp
import torch
from click.testing import CliRunner
from pyro import poutine
from pyro.infer.autoguide.initialization import InitMessenger, init_to_mean, init_to_median

from cell2location_nf.cli import cli
from cell2location_nf.errors import InputError
from cell2location_nf.export.posterior import MAX_CHUNK_VALUES
from cell2location_nf.models.mapping import LOCAL_SITES, detection_mean_from_data
from cell2location_nf.preprocessing.gene_filter import GeneFilterCutoffs
from cell2location_nf.preprocessing.prepare import prepare_reference, prepare_spatial
from cell2location_nf.stages.mapping import (
    MappingSettings,
    build_model,
    export_mapping,
    load_mapping,
    posterior_summaries,
    save_mapping,
    start_composition,
    train_mapping,
)
from cell2location_nf.stages.mapping_inputs import align_genes, check_aligned, combine_samples, drop_empty_locations
from cell2location_nf.stages.reference import ReferenceSettings, export_reference, train_reference

SITES = ["m_g_mean", "m_g_alpha_e_inv", "m_g", "n_s_cells_per_location", "b_s_groups_per_location",
         "z_sr_groups_factors", "k_r_factors_per_groups", "x_fr_group2fact", "w_sf", "detection_mean_y_e",
         "detection_y_s", "s_g_gene_add_alpha_hyp", "s_g_gene_add_mean", "s_g_gene_add_alpha_e_inv", "s_g_gene_add",
         "alpha_g_phi_hyp", "alpha_g_inverse"]


@pytest.fixture(scope="module")
def inputs(test_data, tmp_path_factory):
    """Prepared samples and signatures from a short reference run on the test data."""
    out = tmp_path_factory.mktemp("mapping_inputs")
    ref = prepare_reference(test_data / "reference.h5ad", "cell_type", "batch", ["chemistry"], None,
                            GeneFilterCutoffs(), out / "ref.h5ad", out / "filter.png")
    trained = train_reference(ref, "cell_type", "batch", ["chemistry"], ReferenceSettings(max_epochs=100))
    files = export_reference(trained, out / "reference", num_samples=100)
    paths = []
    for sample in ("sample_1", "sample_2"):
        prepare_spatial("spaceranger", test_data / sample / "outs", sample, out / "ref.h5ad", out / f"{sample}.h5ad",
                        n_cells_per_location=9)
        paths.append(out / f"{sample}.h5ad")
    signatures = pd.read_csv(files["signatures"], index_col=0)
    combined = drop_empty_locations(combine_samples([ad.read_h5ad(p) for p in paths], 30))
    adata, signatures = align_genes(combined, signatures, "signatures.csv")
    return out, paths, files["signatures"], adata, signatures


@pytest.fixture(scope="module")
def trained(inputs):
    _, _, _, adata, signatures = inputs
    return train_mapping(adata, signatures, MappingSettings(max_epochs=3000, seed=0))


def _truth(test_data, index) -> pd.DataFrame:
    tables = []
    for sample in ("sample_1", "sample_2"):
        table = pd.read_csv(test_data / "truth" / f"{sample}_cell_abundance.csv", index_col=0)
        tables.append(table.set_axis([f"{sample}_{b}" for b in table.index]))
    return pd.concat(tables).loc[index]


def test_abundances_recover_the_planted_cells(trained, test_data, tmp_path):
    files = export_mapping(trained, tmp_path, num_samples=200)
    est = pd.concat([pd.read_csv(files[f"{s}.means.csv"], index_col=0) for s in ("sample_1", "sample_2")])
    est = est.drop(columns="barcode")
    truth = _truth(test_data, est.index)[est.columns]
    assert np.corrcoef(est.to_numpy().ravel(), truth.to_numpy().ravel())[0, 1] >= 0.8
    totals = np.corrcoef(est.sum(axis=1), truth.sum(axis=1))[0, 1]
    assert totals >= 0.6, totals
    assert 0.5 < est.to_numpy().sum() / truth.to_numpy().sum() < 2.0


def test_initial_values_are_prior_means_as_upstream(inputs):
    _, _, _, adata, signatures = inputs
    small = adata[:40].copy()
    model = build_model(small, signatures, MappingSettings(), torch.device("cpu"))
    x = torch.as_tensor(small.X.toarray())
    batch = torch.as_tensor(small.obs["batch"].cat.codes.to_numpy().astype(np.int64))
    with poutine.block(), InitMessenger(init_to_mean(fallback=init_to_median)):
        trace = poutine.trace(model).get_trace(x, batch, torch.arange(40))
    ours = model.initial_values(batch.numpy())
    assert list(ours) == SITES
    for site in SITES:
        torch.testing.assert_close(ours[site], trace.nodes[site]["value"], rtol=1e-5, atol=1e-7)
    assert torch.allclose(ours["w_sf"], torch.full_like(ours["w_sf"], 9 / signatures.shape[1]))
    # upstream's key property: the initial expected total count per location equals the observed mean
    expected = (ours["w_sf"] @ model.cell_state * ours["m_g"]).sum(1) * ours["detection_y_s"][:, 0]
    observed_mean = float(np.asarray(small.X.sum(axis=1)).mean())
    assert torch.allclose(expected.mean(), torch.tensor(observed_mean), rtol=1e-4)


def test_composition_start_moves_only_the_split_between_types(inputs, test_data):
    """The fast preset's start: each location's cells at the prior mean, a share of the split from Poisson NMF."""
    _, _, _, adata, signatures = inputs
    model = build_model(adata, signatures, MappingSettings(), torch.device("cpu"))
    batch = adata.obs["batch"].cat.codes.to_numpy().astype(np.int64)
    prior = model.initial_values(batch)
    starts = {}
    for share in (0.0, 0.2, 1.0):
        init = model.initial_values(batch)
        start_composition(init, adata.X, model, share)
        for site in SITES:
            if site != "w_sf":
                assert torch.equal(init[site], prior[site]), site
        torch.testing.assert_close(init["w_sf"].sum(dim=1, keepdim=True), prior["n_s_cells_per_location"])
        starts[share] = init["w_sf"]
    torch.testing.assert_close(starts[0.0], prior["w_sf"])
    n_types = signatures.shape[1]
    assert float(starts[0.2].min()) >= 0.8 * 9 / n_types * (1 - 1e-6)  # four fifths of the uniform start stay
    torch.testing.assert_close(starts[0.2], 0.8 * prior["w_sf"] + 0.2 * starts[1.0])
    # the NMF split follows the planted cells: per-location proportions correlate with the truth's
    truth = _truth(test_data, adata.obs_names)[list(signatures.columns)].to_numpy()
    truth_share = truth / truth.sum(axis=1, keepdims=True).clip(min=1e-9)
    nmf_share = (starts[1.0] / 9).numpy()
    assert np.corrcoef(nmf_share.ravel(), truth_share.ravel())[0, 1] > 0.9


def test_detection_mean_is_upstreams_formula():
    totals, signatures = np.array([100.0, 300.0]), np.array([[1.0, 3.0], [2.0, 2.0]])
    assert detection_mean_from_data(totals, np.array([5.0, 5.0]), signatures) == pytest.approx((200 / 5) / 4)


def test_minibatch_scales_local_sites_only(inputs):
    _, _, _, adata, signatures = inputs
    model = build_model(adata, signatures, MappingSettings(), torch.device("cpu"))
    idx = torch.arange(10)
    x = torch.as_tensor(adata.X[:10].toarray())
    batch = torch.as_tensor(adata.obs["batch"].cat.codes.to_numpy()[:10].astype(np.int64))
    pyro.set_rng_seed(0)
    trace = poutine.trace(model).get_trace(x, batch, idx)
    for site in (*LOCAL_SITES, "data_target"):
        assert trace.nodes[site]["scale"] == adata.n_obs / 10, site
    assert trace.nodes["m_g"]["scale"] == 1.0 and trace.nodes["alpha_g_inverse"]["value"].shape == (2, adata.n_vars)


def test_minibatch_training_runs(inputs):
    _, _, _, adata, signatures = inputs
    run = train_mapping(adata, signatures, MappingSettings(max_epochs=3, batch_size=100))
    assert len(run.history.elbo_train) == 3 and np.isfinite(run.history.elbo_train).all()


@pytest.mark.parametrize("compiled", [False, True])
def test_same_seed_same_results(inputs, compiled):
    _, _, _, adata, signatures = inputs
    settings = MappingSettings(max_epochs=20, seed=3, compile=compiled)
    a, b = (train_mapping(adata, signatures, settings) for _ in range(2))
    for name, value in a.guide.state_dict().items():
        assert torch.equal(b.guide.state_dict()[name], value), name


def test_epoch_hook_sees_the_guide_after_every_epoch_and_changes_nothing(inputs):
    """on_epoch (used by bench/trace_training.py to score the guide along training) only observes."""
    _, _, _, adata, signatures = inputs
    settings = MappingSettings(max_epochs=6, seed=3)
    seen = []

    def record(done, guide):
        seen.append((done, guide, guide.locs["w_sf"].detach().clone()))

    hooked = train_mapping(adata, signatures, settings, on_epoch=record)
    plain = train_mapping(adata, signatures, settings)
    assert [done for done, _, _ in seen] == list(range(1, 7))
    assert all(guide is hooked.guide for _, guide, _ in seen)
    assert not torch.equal(seen[0][2], seen[-1][2])  # a snapshot per epoch, as training moves
    assert torch.equal(seen[-1][2], hooked.guide.locs["w_sf"])
    for name, value in plain.guide.state_dict().items():
        assert torch.equal(hooked.guide.state_dict()[name], value), name


def test_output_keys_match_upstream(trained, tmp_path):
    files = export_mapping(trained, tmp_path, num_samples=50)
    types = list(trained.signatures.columns)
    adata = ad.read_h5ad(files["sample_1.h5ad"])
    assert set(adata.obs["sample"]) == {"sample_1"} and "sample_1" in adata.uns["spatial"]
    for kind in ("means", "stds", "q05", "q95"):
        frame = adata.obsm[f"{kind}_cell_abundance_w_sf"]
        assert list(frame.columns) == [f"{kind}cell_abundance_w_sf_{t}" for t in types]
        assert list(frame.index) == list(adata.obs_names)
    mod = adata.uns["mod"]
    assert mod["model_name"] == ("LocationModelLinearDependentWMultiExperimentLocationBackgroundNormLevel"
                                 "GeneAlphaPyroModel")
    assert {"date", "factor_filter", "factor_names", "var_names", "obs_names", "post_sample_means",
            "post_sample_stds", "post_sample_q05", "post_sample_q95"} <= set(mod)
    assert set(mod["post_sample_means"]) == {*SITES, "u_sf_mRNA_factors", "detection_hyp_prior_alpha"}
    assert mod["post_sample_q05"]["w_sf"].shape == (adata.n_obs, len(types))
    assert mod["post_sample_means"]["u_sf_mRNA_factors"].shape == (adata.n_obs, len(types))
    np.testing.assert_allclose(mod["post_sample_means"]["detection_hyp_prior_alpha"], [[20.0], [20.0]])
    assert (adata.obs["detection_y_s"] > 0).all() and "means_mRNA_abundance_u_sf" in adata.obsm
    q05 = pd.read_csv(files["sample_1.q05.csv"], index_col=0)
    assert list(q05.columns) == ["barcode", *types]
    np.testing.assert_allclose(q05[types].to_numpy(), adata.obsm["q05_cell_abundance_w_sf"].to_numpy(), rtol=1e-6)
    for name in ("history", "reconstruction", "spatial_qc"):
        assert files[name].read_bytes()[:4] == b"\x89PNG"


def test_u_sf_is_w_sf_times_each_types_total_mrna_drawn_jointly(trained):
    """u_sf = w_sf Σ_g g_fg m_g per draw: the export's matmul against the definition on the same random stream."""
    n = 40
    got = posterior_summaries(trained, num_samples=n)
    guide, cell_state = trained.guide, trained.model.cell_state
    gen = torch.Generator().manual_seed(trained.settings.seed + zlib.crc32(b"u_sf_mRNA_factors"))
    m_g = guide.sample_site("m_g", n, gen)  # (n, 1, G)
    loc, scale = guide.locs["w_sf"].detach(), guide.scale("w_sf").detach()
    assert n * loc.numel() <= MAX_CHUNK_VALUES, "the export draws these locations in one chunk, as below"
    w_sf = torch.exp(loc + scale * torch.randn((n, *loc.shape), generator=gen))
    u = w_sf * (cell_state * m_g).sum(-1)[:, None, :]  # (n, locations, types), every gene's product summed
    np.testing.assert_allclose(got["means"]["u_sf_mRNA_factors"], u.mean(0).numpy(), rtol=1e-5)
    np.testing.assert_allclose(got["q05"]["u_sf_mRNA_factors"], torch.quantile(u, 0.05, dim=0).numpy(), rtol=1e-5)
    np.testing.assert_allclose(got["q95"]["u_sf_mRNA_factors"], torch.quantile(u, 0.95, dim=0).numpy(), rtol=1e-5)


def test_quantile_export(trained, tmp_path):
    files = export_mapping(trained, tmp_path, use_quantiles=True)
    adata = ad.read_h5ad(files["sample_2.h5ad"])
    assert {k for k in adata.obsm if k.endswith("_w_sf")} == {
        "q05_cell_abundance_w_sf", "q50_cell_abundance_w_sf", "q95_cell_abundance_w_sf"}


def test_reload_exports_identically(trained, tmp_path):
    path = save_mapping(trained, tmp_path / "model.h5")
    again = load_mapping(path, trained.adata, trained.signatures)
    a = export_mapping(trained, tmp_path / "a", num_samples=30)
    b = export_mapping(again, tmp_path / "b", num_samples=30)
    for key in ("sample_1.means.csv", "sample_2.q05.csv"):
        assert a[key].read_text() == b[key].read_text()


def test_cli_maps_and_reexports(inputs, tmp_path):
    out, paths, signatures, _, _ = inputs
    runner = CliRunner()
    args = ["--signatures", str(signatures), "--num-samples", "20", *map(str, paths)]
    mapped = runner.invoke(cli, ["map-spatial", "--max-epochs", "5", "--outdir", str(tmp_path / "m"), *args])
    assert mapped.exit_code == 0, mapped.output
    summary = json.loads((tmp_path / "m" / "mapping.training_summary.json").read_text())
    assert (summary["schedule"], summary["composition_start"]) == ("fast", 0.2)
    again = runner.invoke(cli, ["export-mapping", "--model", str(tmp_path / "m" / "mapping.mapping_model.h5"),
                                "--outdir", str(tmp_path / "e"), *args])
    assert again.exit_code == 0, again.output
    for name in ("sample_1.cell_abundance_means.csv", "sample_2.cell_abundance_q05.csv"):
        assert (tmp_path / "m" / name).read_text() == (tmp_path / "e" / name).read_text()


def test_signatures_must_match_the_spatial_genes(inputs):
    _, _, _, adata, signatures = inputs
    with pytest.raises(InputError, match="do not match the spatial genes.*intersect genes first"):
        check_aligned(adata, signatures.iloc[::-1], "sig.csv")
    mouse = signatures.set_axis([f"mm_{g}" for g in signatures.index])
    with pytest.raises(InputError, match="'sig.csv' share no genes with the spatial data"):
        align_genes(adata, mouse, "sig.csv")


def test_aligned_counts_are_canonical_csr_once_for_every_training_step(inputs):
    """align_genes lays the counts out as canonical CSR (sorted, no duplicates, no stored zeros), so the warm start,
    composition start and loader, which each check for it, need no copy of their own; the values stay as they are."""
    _, _, _, adata, signatures = inputs
    x = adata.X.tocsr().astype(np.float32)
    rows = np.repeat(np.arange(x.shape[0]), np.diff(x.indptr))
    order = np.lexsort((-x.indices, rows))  # each row's columns in reverse, plus a stored zero in row 0
    indptr = x.indptr.copy()
    indptr[1:] += 1
    data, indices = np.insert(x.data[order], x.indptr[1], 0), np.insert(x.indices[order], x.indptr[1], x.indices[0])
    messy = adata.copy()
    messy.X = sp.csr_matrix((data, indices, indptr), shape=x.shape)
    assert not messy.X.has_canonical_format
    aligned, _ = align_genes(messy, signatures, "signatures.csv")
    assert aligned.X.has_canonical_format and not (aligned.X.data == 0).any() and aligned.X.dtype == np.float32
    np.testing.assert_array_equal(aligned.X.toarray(), x.toarray())


def test_nan_signatures_are_rejected(inputs):
    _, _, _, adata, signatures = inputs
    broken = signatures.copy()
    broken.iloc[3, 1] = np.nan
    with pytest.raises(InputError, match=rf"NaN or infinite, in cell type\(s\) {broken.columns[1]}"):
        train_mapping(adata, broken, MappingSettings(max_epochs=1), source="sig.csv")


def test_zero_locations_are_dropped_and_all_zero_sample_fails(inputs, caplog):
    _, paths, _, _, _ = inputs
    first, second = ad.read_h5ad(paths[0]), ad.read_h5ad(paths[1])
    dense = first.X.toarray()
    dense[:5] = 0
    first.X = sp.csr_matrix(dense)
    with caplog.at_level(logging.WARNING):
        kept = drop_empty_locations(combine_samples([first, second], 30))
    assert kept.n_obs == first.n_obs + second.n_obs - 5
    assert "Sample 'sample_1': dropping 5 location(s) with zero total counts" in caplog.text
    second.X = second.X * 0
    with pytest.raises(InputError, match="sample_2: every location has zero counts"):
        drop_empty_locations(combine_samples([first, second], 30))


def test_pyro_trace_elbo_path_trains_the_same_objective(inputs):
    _, _, _, adata, signatures = inputs
    fused = train_mapping(adata, signatures, MappingSettings(max_epochs=30, seed=5))
    pyro_run = train_mapping(adata, signatures, MappingSettings(max_epochs=30, seed=5, elbo="pyro"))
    # different random draws, same objective: the -ELBO histories agree to within sampling noise
    np.testing.assert_allclose(fused.history.elbo_train[-5:], pyro_run.history.elbo_train[-5:], rtol=0.02)


def test_export_writes_per_type_expression_that_sums_to_the_counts_less_ambient(trained, tmp_path):
    files = export_mapping(trained, tmp_path, num_samples=20, use_quantiles=True, per_type_expression=True)
    split = ad.read_h5ad(files["sample_1.per_type"])
    types = list(trained.signatures.columns)
    assert list(split.layers) == types
    rows = np.flatnonzero((trained.adata.obs["sample"] == "sample_1").to_numpy())
    observed = trained.adata.X[rows].toarray()
    summed = sum(split.layers[t].toarray() for t in types)
    assert split.shape == observed.shape and np.all(summed <= observed + 1e-3) and summed.sum() > 0.5 * observed.sum()


def test_diverged_training_stops_with_a_clear_error_and_writes_nothing(inputs, tmp_path):
    """A learning rate far too high turns the −ELBO into NaN: the command says so and exports nothing."""
    out, paths, signatures, _, _ = inputs
    result = CliRunner().invoke(cli, ["map-spatial", "--signatures", str(signatures), "--lr", "1000",
                                      "--max-epochs", "200", "--no-compile", "--outdir", str(tmp_path / "m"),
                                      *map(str, paths)])
    assert result.exit_code == 1
    assert "training diverged" in result.output and "lower learning rate" in result.output
    assert "mapping: the -ELBO became nan at epoch" in result.output
    assert not (tmp_path / "m").exists() or not any((tmp_path / "m").iterdir())


def test_fast_schedule_on_minibatches_is_recorded_in_the_summary(inputs, tmp_path):
    """--batch-size below the number of locations switches 'fast' to its minibatch learning rate, epochs and
    NMF warm start."""
    from cell2location_nf.stages.mapping import FAST_MINIBATCH, minibatch_lr

    _, paths, signatures, adata, _ = inputs
    result = CliRunner().invoke(cli, ["map-spatial", "--signatures", str(signatures), "--batch-size",
                                      str(adata.n_obs // 3), "--num-samples", "20", "--outdir", str(tmp_path / "m"),
                                      *map(str, paths)])
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "m" / "mapping.training_summary.json").read_text())
    assert summary["schedule"] == "fast-minibatch" and summary["batch_size"] == adata.n_obs // 3
    assert (summary["epochs"], summary["lr"], summary["lr_final"]) == (
        FAST_MINIBATCH["max_epochs"], *minibatch_lr(adata.n_obs, adata.n_obs // 3))
    assert summary["warm_start"] is True and summary["composition_start"] == 0.0  # the full NMF start wins
    assert (summary["warm_start_updates"], summary["warm_start_relaxation"], summary["warm_start_tol"]) == (300, 1.0, 0)
