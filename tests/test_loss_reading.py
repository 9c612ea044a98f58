"""Training reads its step losses from the device in batches, with the values of reading each at once."""

from __future__ import annotations

import math

import pytest
import torch

from cell2location_nf.errors import TrainingDivergedError
from cell2location_nf.inference import svi
from cell2location_nf.inference.checkpoint import Checkpoint


def _noisy_fit(n_epochs: int, steps: int, seen: list[float], blow_up_at: int | None = None, **kwargs):
    """A seeded toy fit with ``steps`` minibatches per epoch; ``seen`` gets every step's loss as it is computed."""
    torch.manual_seed(0)
    guide = torch.nn.Module()
    guide.p = torch.nn.Parameter(torch.zeros(3))

    def loss_fn(model, guide_, epoch, step):
        loss = ((guide_.p - torch.tensor([1.0, 2.0, 3.0])) ** 2).sum() + 10.0 + 0.1 * torch.randn(())
        if blow_up_at is not None and epoch >= blow_up_at:
            loss = loss * float("inf")
        seen.append(loss.item())
        return loss

    history = svi.run_svi(None, guide, lambda epoch: [(epoch, s) for s in range(steps)], n_epochs=n_epochs,
                          lr=0.05, loss_fn=loss_fn, **kwargs)
    return history, guide


@pytest.mark.parametrize("steps", [1, 3])
def test_history_holds_each_epochs_mean_of_its_step_losses_exactly(steps):
    seen: list[float] = []
    history, _ = _noisy_fit(n_epochs=137, steps=steps, seen=seen)  # not a multiple of the read interval
    expected = [sum(seen[e * steps:(e + 1) * steps]) / steps for e in range(137)]
    assert history.elbo_train == expected  # bit for bit, as per-step .item() gave
    assert len(seen) == 137 * steps


def test_a_diverged_epoch_is_named_at_the_next_read_before_anything_is_saved(tmp_path):
    seen: list[float] = []
    checkpoint = Checkpoint(tmp_path / "run.ckpt", every=svi.READ_LOSSES_EVERY)
    with pytest.raises(TrainingDivergedError, match=r"at epoch 31/200 \(learning rate 0\.05\)"):
        _noisy_fit(n_epochs=200, steps=2, seen=seen, blow_up_at=30, checkpoint=checkpoint,
                   log_every=1000)
    # it was caught at the first read after epoch 31 (epoch 50), where the checkpoint would have been written
    assert len(seen) == svi.READ_LOSSES_EVERY * 2 and not math.isfinite(seen[-1])
    assert not checkpoint.exists()


def test_the_plateau_rule_still_sees_every_epoch_when_it_is_on():
    seen: list[float] = []
    schedule = svi.Schedule(tol=1e-3, window=10, min_epochs=30)
    history, _ = _noisy_fit(n_epochs=500, steps=1, seen=seen, schedule=schedule)
    # the rule stops at the first epoch where it holds, not at the next read of the losses
    assert history.stopped_early and len(history.elbo_train) == len(seen)
    assert svi.plateaued(history.elbo_train, schedule)
    assert not svi.plateaued(history.elbo_train[:-1], schedule)
