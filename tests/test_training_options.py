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
    w, m, _ = poisson_nmf(x, signatures, detection, n_cells, n_iter=2000)
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
    w_sparse, m_sparse, _ = poisson_nmf(sp.csr_matrix(counts), signatures, detection, n_cells, n_iter=50)
    torch.testing.assert_close(w_sparse, w, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(m_sparse, m, rtol=1e-4, atol=1e-5)


def test_poisson_nmf_in_place_with_int32_indices_equals_the_allocating_int64_form(monkeypatch):
    """On CPU the warm start's sparse counts carry int32 indices and its ratios at the non-zeros and (S x F) arrays
    are rewritten in buffers (faster): the same abundances and scales, bit for bit, as allocating them anew with
    int64 indices, with plain and with relaxed updates;
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
    w32, m32, _ = poisson_nmf(messy, signatures, detection, n_cells, n_iter=40)
    for before, now in zip(kept, (messy.data, messy.indices, messy.indptr), strict=True):
        np.testing.assert_array_equal(before, now)

    int32_tensor = warm_start._csr_tensor

    def int64_tensor(x, device):
        t = int32_tensor(x, device)
        return torch.sparse_csr_tensor(t.crow_indices().long(), t.col_indices().long(), t.values(), size=t.shape)

    w_alloc, m_alloc, _ = poisson_nmf(canonical, signatures, detection, n_cells, n_iter=40, in_place=False)
    assert torch.equal(w32, w_alloc) and torch.equal(m32, m_alloc)
    relaxed = poisson_nmf(canonical, signatures, detection, n_cells, n_iter=40, relaxation=1.5)
    relaxed_alloc = poisson_nmf(canonical, signatures, detection, n_cells, n_iter=40, relaxation=1.5, in_place=False)
    assert not torch.equal(relaxed.w, w32)  # the relaxed updates took another path, which is the same in place
    assert torch.equal(relaxed.w, relaxed_alloc.w) and torch.equal(relaxed.m, relaxed_alloc.m)
    monkeypatch.setattr(warm_start, "_csr_tensor", int64_tensor)
    w64, m64, _ = poisson_nmf(canonical, signatures, detection, n_cells, n_iter=40, in_place=False)
    assert torch.equal(w32, w64) and torch.equal(m32, m64)


def _nmf_problem(seed: int = 3):
    rng = np.random.default_rng(seed)
    signatures = torch.as_tensor(rng.gamma(0.5, 1.0, size=(5, 160)), dtype=torch.float32)
    detection = torch.as_tensor(rng.gamma(20.0, 1 / 20, size=(120, 1)), dtype=torch.float32)
    n_cells = torch.full((120, 1), 3.0)
    w_true = torch.as_tensor(rng.gamma(0.6, 5.0, size=(120, 5)), dtype=torch.float32)
    mean = ((w_true @ signatures) * detection).numpy() * 0.2
    return sp.csr_matrix(rng.poisson(mean).astype(np.float32)), signatures, detection, n_cells


def test_half_deviance_from_the_ratios_at_the_non_zeros_equals_the_dense_formula():
    from cell2location_nf.inference import warm_start

    x, signatures, detection, n_cells = _nmf_problem()
    fit = poisson_nmf(x, signatures, detection, n_cells, n_iter=7)
    mean = ((fit.w * detection) @ (signatures * fit.m)).double().numpy() + 1e-8
    dense = x.toarray().astype(np.float64)
    positive = dense > 0
    expected = (dense[positive] * np.log(dense[positive] / mean[positive])).sum() - dense.sum() + mean.sum()
    assert warm_start.fit_deviance(x, signatures, detection, fit) == pytest.approx(expected, rel=1e-6)


def test_poisson_nmf_stops_once_its_deviance_is_flat(monkeypatch, caplog):
    """With ``tol`` the updates stop at the first reading (every CHECK_EVERY updates) whose deviance fell by less
    than tol since the one before; the fit is then exactly that of as many updates without the rule."""
    from cell2location_nf.inference import warm_start

    x, signatures, detection, n_cells = _nmf_problem()
    readings = []
    measure = warm_start.half_deviance
    monkeypatch.setattr(warm_start, "half_deviance", lambda *a: readings.append(measure(*a)) or readings[-1])
    with caplog.at_level("INFO", logger=warm_start.__name__):
        stopped = poisson_nmf(x, signatures, detection, n_cells, n_iter=300, tol=1e-4)
    assert 0 < stopped.iterations < 300 and stopped.iterations % warm_start.CHECK_EVERY == 0
    assert len(readings) == stopped.iterations // warm_start.CHECK_EVERY + 1
    assert readings[-2] - readings[-1] < 1e-4 * readings[-1]  # flat at the last reading
    assert all(before - after >= 1e-4 * after for before, after in zip(readings[:-2], readings[1:-1], strict=True))
    assert f"Poisson NMF: {stopped.iterations} of at most 300 updates (deviance flat to 0.0001)" in caplog.text
    monkeypatch.setattr(warm_start, "half_deviance", measure)
    same = poisson_nmf(x, signatures, detection, n_cells, n_iter=stopped.iterations)
    assert same.iterations == stopped.iterations
    assert torch.equal(stopped.w, same.w) and torch.equal(stopped.m, same.m)
    # without a tolerance (or with one the fit never meets) every update is made
    assert poisson_nmf(x, signatures, detection, n_cells, n_iter=60).iterations == 60
    assert poisson_nmf(x, signatures, detection, n_cells, n_iter=60, tol=1e-12).iterations == 60


def test_over_relaxed_poisson_nmf_reaches_a_lower_deviance_in_as_many_updates():
    """The warm start's relaxation (1.5) multiplies w by each update's factor raised to 1.5: in as many updates its
    deviance ends lower than that of plain updates, and a relaxation of 1 is the plain update bit for bit."""
    from cell2location_nf.inference import warm_start

    x, signatures, detection, n_cells = _nmf_problem()

    def deviance(fit):
        return warm_start.fit_deviance(x, signatures, detection, fit)

    plain = poisson_nmf(x, signatures, detection, n_cells, n_iter=30)
    relaxed = poisson_nmf(x, signatures, detection, n_cells, n_iter=30, relaxation=1.5)
    assert deviance(relaxed) < deviance(plain)
    assert deviance(relaxed) < deviance(poisson_nmf(x, signatures, detection, n_cells, n_iter=40))
    unrelaxed = poisson_nmf(x, signatures, detection, n_cells, n_iter=30, relaxation=1.0)
    assert torch.equal(unrelaxed.w, plain.w) and torch.equal(unrelaxed.m, plain.m)
    with pytest.raises(ValueError, match="relaxation must be at least 1 and below 2, got 2.0"):
        poisson_nmf(x, signatures, detection, n_cells, relaxation=2.0)


def test_over_relaxed_poisson_nmf_falls_back_to_plain_updates_when_its_deviance_rises(monkeypatch, caplog):
    from cell2location_nf.inference import warm_start

    x, signatures, detection, n_cells = _nmf_problem()
    readings = iter([5.0, 4.0, 4.5, 3.0, 2.0, 1.0])  # rises at the third reading, after 20 updates
    monkeypatch.setattr(warm_start, "half_deviance", lambda *a: next(readings))
    with caplog.at_level("INFO", logger=warm_start.__name__):
        switched = poisson_nmf(x, signatures, detection, n_cells, n_iter=50, relaxation=1.5)
    assert "the deviance rose by update 20; plain updates from there" in caplog.text
    assert switched.iterations == 50
    falling = iter([5.0, 4.0, 3.0, 2.0, 1.0])
    monkeypatch.setattr(warm_start, "half_deviance", lambda *a: next(falling))
    relaxed_throughout = poisson_nmf(x, signatures, detection, n_cells, n_iter=50, relaxation=1.5)
    assert not torch.equal(switched.w, relaxed_throughout.w)


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
    # the warm start's NMF: 300 plain updates ("Shorter warm starts: measured, not adopted"), or as asked
    minibatch = settings_for_schedule("fast", n_obs=20000, batch_size=5000)
    assert (minibatch.warm_start_updates, minibatch.warm_start_relaxation, minibatch.warm_start_tol) == (300, 1.0, 0.0)
    shorter = settings_for_schedule("fast", n_obs=20000, batch_size=5000, warm_start_updates=150,
                                    warm_start_relaxation=1.5, warm_start_tol=1e-5)
    assert (shorter.warm_start_updates, shorter.warm_start_relaxation, shorter.warm_start_tol) == (150, 1.5, 1e-5)
    with pytest.raises(ValueError, match="warm_start_tol must be 0 or more, got -1"):
        settings_for_schedule("fast", warm_start_tol=-1.0)
    with pytest.raises(ValueError, match="warm_start_updates must be 1 or more, got 0"):
        settings_for_schedule("fast", warm_start_updates=0)
    with pytest.raises(ValueError, match="warm_start_relaxation must be at least 1 and below 2, got 2.5"):
        settings_for_schedule("fast", warm_start_relaxation=2.5)
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
