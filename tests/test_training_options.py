"""Training options for faster mapping: NMF warm start, learning-rate decay, plateau stop, presets."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from cell2location_nf.inference.svi import Schedule, lr_scheduler, plateaued, run_svi
from cell2location_nf.inference.warm_start import poisson_nmf


def test_poisson_nmf_recovers_abundances_and_the_expected_counts():
    rng = np.random.default_rng(0)
    signatures = torch.as_tensor(rng.gamma(0.5, 1.0, size=(4, 300)), dtype=torch.float32)
    w_true = torch.as_tensor(rng.gamma(1.0, 2.0, size=(200, 4)), dtype=torch.float32)
    m_true = torch.as_tensor(rng.gamma(4.0, 0.25, size=(1, 300)), dtype=torch.float32)
    detection = torch.full((200, 1), 0.5)
    n_cells = w_true.sum(dim=1, keepdim=True).mean().expand(200, 1)  # N = the true mean total
    x = sp.csr_matrix(((w_true @ (signatures * m_true)) * detection).numpy())  # noiseless expected counts
    w, m = poisson_nmf(x, signatures, detection, n_cells, n_iter=2000)
    assert np.corrcoef(w.numpy().ravel(), w_true.numpy().ravel())[0, 1] > 0.99
    # m_g alone is not identifiable where genes are type-specific (it trades off against per-type
    # scales); the fitted expected counts are
    fitted = ((w @ (signatures * m)) * detection).numpy()
    assert np.corrcoef(fitted.ravel(), x.toarray().ravel())[0, 1] > 0.999
    torch.testing.assert_close(w.sum(dim=1).mean(), n_cells.mean(), rtol=1e-4, atol=0)


def test_poisson_nmf_on_sparse_counts_follows_the_dense_updates():
    """The sparse iteration computes x / mean only at non-zeros; on mostly-zero counts it must give the
    same abundances as the plain dense Lee & Seung updates."""
    rng = np.random.default_rng(1)
    signatures = torch.as_tensor(rng.gamma(0.5, 1.0, size=(5, 120)), dtype=torch.float32)
    detection = torch.as_tensor(rng.gamma(20.0, 1 / 20, size=(80, 1)), dtype=torch.float32)
    n_cells = torch.full((80, 1), 3.0)
    counts = rng.poisson(0.05, size=(80, 120)).astype(np.float32)
    assert 0.9 < (counts == 0).mean() < 0.99
    x = torch.as_tensor(counts)
    w, m = n_cells.expand(-1, 5) / 5, torch.ones(1, 120)
    for _ in range(50):  # the updates written out densely
        gm = signatures * m
        w = (w * ((x / ((w @ gm) * detection + 1e-8)) @ gm.T) / (gm.sum(dim=1) * detection)).clamp_min(1e-3)
        m = (x.sum(dim=0) / ((detection * w).sum(dim=0) @ signatures)).clamp_min(1e-3).unsqueeze(0)
        scale = w.sum(dim=1).mean() / n_cells.mean()
        w, m = w / scale, m * scale
    w_sparse, m_sparse = poisson_nmf(sp.csr_matrix(counts), signatures, detection, n_cells, n_iter=50)
    torch.testing.assert_close(w_sparse, w, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(m_sparse, m, rtol=1e-4, atol=1e-5)


def test_poisson_nmf_in_place_with_int32_indices_equals_the_allocating_int64_form(monkeypatch):
    """On CPU the warm start's sparse counts carry int32 indices and its ratios at the non-zeros are rewritten in
    one buffer (faster): the same abundances and scales, bit for bit, as allocating them anew with int64 indices;
    unsorted columns, duplicates and stored zeros give the canonical matrix's result, and the caller's matrix is
    not changed."""
    import cell2location_nf.inference.warm_start as warm_start

    rng = np.random.default_rng(2)
    signatures = torch.as_tensor(rng.gamma(0.5, 1.0, size=(6, 150)), dtype=torch.float32)
    detection = torch.as_tensor(rng.gamma(20.0, 1 / 20, size=(90, 1)), dtype=torch.float32)
    n_cells = torch.full((90, 1), 4.0)
    canonical = sp.csr_matrix((rng.poisson(0.3, size=(90, 150)) * (rng.random((90, 150)) < 0.2)).astype(np.float32))
    # the same counts with each row's entries reversed, its first entry split in two and a stored zero at its end
    data, indices, indptr = [], [], [0]
    for row in range(90):
        values = canonical.data[canonical.indptr[row]:canonical.indptr[row + 1]].tolist()
        columns = canonical.indices[canonical.indptr[row]:canonical.indptr[row + 1]].tolist()
        if values:
            values[0] -= 0.5
            values, columns = values[::-1] + [0.5], columns[::-1] + [columns[0]]
        data += values + [0.0]
        indices += columns + [149 - row % 3]
        indptr.append(len(data))
    messy = sp.csr_matrix((np.array(data, np.float32), np.array(indices), np.array(indptr)), shape=canonical.shape)
    assert not messy.has_canonical_format
    kept = (messy.data.copy(), messy.indices.copy(), messy.indptr.copy())
    assert warm_start._csr_tensor(canonical, torch.device("cpu")).col_indices().dtype == torch.int32
    w32, m32 = poisson_nmf(messy, signatures, detection, n_cells, n_iter=40)
    for before, now in zip(kept, (messy.data, messy.indices, messy.indptr), strict=True):
        np.testing.assert_array_equal(before, now)

    int32_tensor = warm_start._csr_tensor

    def int64_tensor(x, device):
        t = int32_tensor(x, device)
        return torch.sparse_csr_tensor(t.crow_indices().long(), t.col_indices().long(), t.values(), size=t.shape)

    w_alloc, m_alloc = poisson_nmf(canonical, signatures, detection, n_cells, n_iter=40, in_place=False)
    assert torch.equal(w32, w_alloc) and torch.equal(m32, m_alloc)
    monkeypatch.setattr(warm_start, "_csr_tensor", int64_tensor)
    w64, m64 = poisson_nmf(canonical, signatures, detection, n_cells, n_iter=40, in_place=False)
    assert torch.equal(w32, w64) and torch.equal(m32, m64)


def test_plateau_rule():
    schedule = Schedule(tol=1e-3, window=10, min_epochs=30)
    falling = [100.0 - i for i in range(40)]
    flat = [100.0] * 40
    assert not plateaued(falling, schedule)
    assert plateaued(flat, schedule)
    assert not plateaued(flat[:25], schedule)  # before min_epochs


def test_training_stops_on_plateau_and_decays_the_learning_rate():
    target = torch.tensor(3.0)
    param = torch.nn.Parameter(torch.tensor(0.0))
    guide = torch.nn.Module()
    guide.p = param
    seen_lr = []

    def loss_fn(model, guide_, step):
        seen_lr.append(step)
        return (guide_.p - target) ** 2 + 1.0

    history = run_svi(None, guide, lambda epoch: [(epoch,)], n_epochs=5000, lr=0.1, loss_fn=loss_fn,
                      schedule=Schedule(lr_final=0.01, tol=1e-6, window=50, min_epochs=200))
    assert history.stopped_early and 200 <= len(history.elbo_train) < 5000
    assert abs(param.item() - 3.0) < 1e-2


def _noisy_quadratic_run(schedule: Schedule, n_epochs: int) -> list[float]:
    """-ELBO history of a seeded toy fit whose loss carries one-draw noise, as the mapping's does."""
    torch.manual_seed(0)
    guide = torch.nn.Module()
    guide.p = torch.nn.Parameter(torch.tensor(0.0))

    def loss_fn(model, guide_, step):
        return (guide_.p - 3.0) ** 2 + 100.0 + 0.01 * torch.randn(())

    return run_svi(None, guide, lambda epoch: [(epoch,)], n_epochs=n_epochs, lr=0.01, loss_fn=loss_fn,
                   schedule=schedule).elbo_train


def test_replaying_the_plateau_rule_on_a_full_run_finds_where_a_tol_run_stops(monkeypatch):
    """bench/stopping_rule.py's premise: a run without --tol tells where the same seed with --tol stops."""
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "bench"))
    import stopping_rule
    rule = Schedule(tol=1e-5, window=50, min_epochs=100)
    full = _noisy_quadratic_run(Schedule(), 2000)
    stopped = _noisy_quadratic_run(rule, 2000)
    assert 100 <= len(stopped) < 2000
    assert stopping_rule.stop_epoch(full, rule) == len(stopped)
    assert full[:len(stopped)] == stopped
    assert stopping_rule.stop_epoch([1000.0 - i for i in range(500)], rule) is None  # still falling: no stop


def _rates(schedule: Schedule, lr: float, n_epochs: int) -> list[float]:
    """The learning rate of each epoch as run_svi's scheduler sets it, for two parameter groups."""
    groups = [{"params": [torch.nn.Parameter(torch.zeros(1))]},
              {"params": [torch.nn.Parameter(torch.zeros(1))], "lr": lr * 0.5}]
    optimizer = torch.optim.Adam(groups, lr=lr)
    scheduler = lr_scheduler(optimizer, schedule, lr, n_epochs)
    rates = []
    for _ in range(n_epochs):
        rates.append(optimizer.param_groups[0]["lr"])
        assert optimizer.param_groups[1]["lr"] == pytest.approx(rates[-1] * 0.5)  # the scales keep their factor
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
    return rates


def test_warm_up_raises_the_rate_linearly_then_decays_to_the_final_rate():
    rates = _rates(Schedule(lr_final=0.001, warmup_epochs=4), lr=0.1, n_epochs=11)
    assert rates[:4] == pytest.approx([0.025, 0.05, 0.075, 0.1])
    assert rates[4:] == pytest.approx([0.1 * 0.01 ** (k / 6) for k in range(7)])  # ends at lr_final
    assert _rates(Schedule(warmup_epochs=2), lr=0.1, n_epochs=4) == pytest.approx([0.05, 0.1, 0.1, 0.1])
    without = _rates(Schedule(lr_final=0.001), lr=0.1, n_epochs=11)
    assert without == pytest.approx([0.1 * 0.01 ** (k / 10) for k in range(11)])  # the decay as before


@pytest.mark.parametrize("share", ["-0.1", "1.5"])
def test_a_composition_share_outside_0_to_1_is_refused_before_any_input_is_read(tmp_path, share):
    from click.testing import CliRunner

    from cell2location_nf.cli import cli

    signatures, spatial = tmp_path / "signatures.csv", tmp_path / "sample.h5ad"
    signatures.write_text("not read")
    spatial.write_text("not read")
    result = CliRunner().invoke(cli, ["map-spatial", "--signatures", str(signatures), "--composition-start", share,
                                      "--outdir", str(tmp_path / "m"), str(spatial)])
    assert result.exit_code == 2 and "--composition-start" in result.output and "0<=x<=1" in result.output
    assert not (tmp_path / "m").exists()


def test_a_negative_warm_up_is_refused_before_any_input_is_read(tmp_path):
    from click.testing import CliRunner

    from cell2location_nf.cli import cli

    signatures, spatial = tmp_path / "signatures.csv", tmp_path / "sample.h5ad"
    signatures.write_text("not read")
    spatial.write_text("not read")
    result = CliRunner().invoke(cli, ["map-spatial", "--signatures", str(signatures), "--lr-warmup", "-1",
                                      "--outdir", str(tmp_path / "m"), str(spatial)])
    assert result.exit_code == 2 and "--lr-warmup" in result.output and ">=0" in result.output
    assert not (tmp_path / "m").exists()


def test_schedules_are_presets_that_explicit_options_override():
    from cell2location_nf.stages.mapping import SCHEDULES, settings_for_schedule

    upstream = settings_for_schedule("upstream")
    assert (upstream.max_epochs, upstream.lr, upstream.lr_final, upstream.warm_start) == (30000, 0.002, None, False)
    fast = settings_for_schedule("fast", max_epochs=50, lr=None, seed=3)
    assert fast.max_epochs == 50 and fast.lr == SCHEDULES["fast"]["lr"] and fast.seed == 3
    # a lower initial learning rate lowers the whole decay; an explicit final one is kept
    assert settings_for_schedule("fast", lr=0.004).lr_final == pytest.approx(SCHEDULES["fast"]["lr_final"] / 10)
    assert settings_for_schedule("fast", lr=0.004, lr_final=0.003).lr_final == 0.003
    assert fast.schedule == "fast"
    # the fast preset as validated in bench/RESULTS.md ("Four seeds per set"); the guide's scales
    # train at their lower rate in full batch only; upstream keeps one rate
    full = settings_for_schedule("fast")
    assert (full.max_epochs, full.lr, full.lr_final, full.scale_lr_factor, full.warm_start,
            full.composition_start) == (9000, 0.04, 0.012, 0.35, False, 0.2)
    assert upstream.composition_start == 0.0  # upstream's exact start, every site at its prior mean
    assert settings_for_schedule("fast", composition_start=0.0).composition_start == 0.0
    assert settings_for_schedule("fast", warm_start=True).composition_share == 0.0  # the full NMF start sets w_sf
    with pytest.raises(ValueError, match="composition_start must be between 0 and 1, got 1.5"):
        settings_for_schedule("fast", composition_start=1.5)
    assert upstream.scale_lr_factor == 1.0
    assert settings_for_schedule("fast", scale_lr_factor=1.0).scale_lr_factor == 1.0
    assert settings_for_schedule("fast", n_obs=20000, batch_size=500).scale_lr_factor == 1.0
    with pytest.raises(ValueError, match="schedule must be one of"):
        settings_for_schedule("slow")


def test_fast_schedule_on_minibatches_lowers_its_learning_rate_with_the_steps_per_epoch():
    from cell2location_nf.stages.mapping import FAST_MINIBATCH, SCHEDULES, minibatch_lr, settings_for_schedule

    four_steps = settings_for_schedule("fast", n_obs=20000, batch_size=5000)
    ten_steps = settings_for_schedule("fast", n_obs=20000, batch_size=2000)
    forty_steps = settings_for_schedule("fast", n_obs=200000, batch_size=5000)
    assert {four_steps.schedule, ten_steps.schedule, forty_steps.schedule} == {"fast-minibatch"}
    assert four_steps.max_epochs == FAST_MINIBATCH["max_epochs"] < SCHEDULES["fast"]["max_epochs"]
    # the learning rates the scale benchmark trained well with (bench/RESULTS.md)
    assert four_steps.lr == SCHEDULES["fast"]["lr"]
    assert ten_steps.lr == pytest.approx(0.023, abs=5e-4) and forty_steps.lr == pytest.approx(0.01)
    assert forty_steps.lr_final == pytest.approx(forty_steps.lr / 10)
    assert minibatch_lr(10000, 5000)[0] == SCHEDULES["fast"]["lr"]  # never above the full-batch rate
    # minibatches start from the NMF warm start (few steps per location); full batch from the prior mean
    assert four_steps.warm_start and forty_steps.warm_start
    assert not settings_for_schedule("fast", n_obs=20000).warm_start
    assert not settings_for_schedule("fast", n_obs=20000, batch_size=500, warm_start=False).warm_start
    # explicit options win; a lower initial learning rate lowers the whole decay
    lowered = settings_for_schedule("fast", n_obs=20000, batch_size=5000, lr=0.004)
    assert lowered.lr == 0.004 and lowered.lr_final == pytest.approx(four_steps.lr_final / 10)
    # a batch holding every location is full-batch training; the upstream preset is never changed
    assert settings_for_schedule("fast", n_obs=4000, batch_size=5000).schedule == "fast"
    upstream = settings_for_schedule("upstream", n_obs=20000, batch_size=500)
    assert upstream.lr == SCHEDULES["upstream"]["lr"] and not upstream.warm_start


def test_guide_scales_train_at_their_own_learning_rate():
    """scale_lr_factor puts the guide's raw scales in an Adam group of their own (as the fast preset does)."""
    guide = torch.nn.Module()
    guide.loc = torch.nn.Parameter(torch.tensor(0.0))
    guide.raw_scales = torch.nn.ParameterDict({"w_sf": torch.nn.Parameter(torch.tensor(0.0))})

    def loss_fn(model, guide_, step):
        return guide_.loc + guide_.raw_scales["w_sf"]

    run_svi(None, guide, lambda epoch: [(epoch,)], n_epochs=1, lr=0.1, loss_fn=loss_fn, scale_lr_factor=0.5)
    # Adam's first step moves every parameter by its learning rate against the gradient's sign
    assert guide.loc.item() == pytest.approx(-0.1, rel=1e-4)
    assert guide.raw_scales["w_sf"].item() == pytest.approx(-0.05, rel=1e-4)
