"""Minibatch stochastic variational inference with a 1-particle Trace_ELBO and Adam, as upstream trains.

We call ``Trace_ELBO.differentiable_loss`` and step a torch Adam ourselves (pyro's ``Adam`` wraps the
same torch optimiser with the same defaults), so the guide's parameters stay module-owned.
"""

from __future__ import annotations

import logging
import math
import os
import signal
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import pyro
import torch
from pyro.infer import Trace_ELBO

from ..errors import TrainingDivergedError
from .allocator import retain_freed_memory
from .checkpoint import Checkpoint, restore_rng_state, rng_state

log = logging.getLogger(__name__)


@dataclass
class TrainingHistory:
    """-ELBO per epoch (mean over the epoch's steps, scaled to the full data as upstream reports it)."""

    elbo_train: list[float] = field(default_factory=list)
    seconds: float = 0.0
    stopped_early: bool = False


@dataclass(frozen=True)
class Schedule:
    """Optional learning-rate decay and stopping rule; the defaults reproduce upstream (constant lr, all epochs).

    ``lr_final``: the learning rate decays exponentially from ``lr`` to ``lr_final`` over the epochs.
    ``warmup_epochs``: first raise the learning rate linearly to ``lr`` over these epochs (the decay then
    runs over the rest), so Adam's first, sign-like steps are small.
    ``tol``: stop once the mean -ELBO of the last ``window`` epochs improved on the window before by less
    than ``tol`` (relative), but not before ``min_epochs``.
    """

    lr_final: float | None = None
    warmup_epochs: int = 0
    tol: float | None = None
    window: int = 200
    min_epochs: int = 1000


def plateaued(history: list[float], schedule: Schedule) -> bool:
    """The stopping rule of :class:`Schedule`."""
    w = schedule.window
    if schedule.tol is None or len(history) < max(schedule.min_epochs, 2 * w):
        return False
    recent, before = sum(history[-w:]) / w, sum(history[-2 * w:-w]) / w
    return (before - recent) / abs(before) < schedule.tol


def seed_everything(seed: int, device: torch.device | str = "cpu") -> None:
    """Seed torch, numpy and python's random; on CPU also force deterministic kernels.

    Multi-threaded CPU scatter/index-add in the backward pass sums in a varying order; deterministic
    algorithms make a seeded CPU run repeat bit for bit. GPU runs are not bit-reproducible (as upstream).
    """
    pyro.set_rng_seed(seed)
    if torch.device(device).type == "cpu":
        torch.use_deterministic_algorithms(True)


def _adam(params, lr: float) -> torch.optim.Adam:
    """torch's Adam with the fused (single-kernel) update where available; the same algorithm otherwise."""
    params = list(params)
    try:
        return torch.optim.Adam(params, lr=lr, fused=True)
    except (RuntimeError, TypeError):
        return torch.optim.Adam(params, lr=lr)


def lr_factor(epoch: int, schedule: Schedule, lr: float, n_epochs: int) -> float:
    """The learning rate of ``epoch`` (0-based) relative to ``lr``: linear warm-up, then exponential decay."""
    warmup = schedule.warmup_epochs
    if epoch < warmup:
        return (epoch + 1) / warmup
    if schedule.lr_final is None or n_epochs - 1 <= warmup:
        return 1.0
    return (schedule.lr_final / lr) ** ((epoch - warmup) / (n_epochs - 1 - warmup))


def lr_scheduler(optimizer: torch.optim.Optimizer, schedule: Schedule, lr: float, n_epochs: int):
    """The per-epoch scheduler of ``schedule``; None for a constant rate.

    Without warm-up it is torch's ExponentialLR, as before the warm-up existed: its running product of
    ``gamma`` differs from ``lr_factor``'s power in the last bits, so those runs still repeat bit for bit.
    """
    if schedule.warmup_epochs > 0:
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda e: lr_factor(e, schedule, lr, n_epochs))
    if schedule.lr_final is not None and n_epochs > 1:
        gamma = (schedule.lr_final / lr) ** (1 / (n_epochs - 1))
        return torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma)
    return None


def format_eta(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


@contextmanager
def sigterm_flag(enabled: bool) -> Iterator[list[bool]]:
    """While training with checkpoints, SIGTERM (preemption notice) only sets a flag; see :func:`run_svi`."""
    flag = [False]
    if not enabled:
        yield flag
        return

    def handler(signum, frame):
        flag[0] = True

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield flag
    finally:
        signal.signal(signal.SIGTERM, previous)


def _training_state(epoch: int, guide, optimizer, scheduler, history: TrainingHistory, batches) -> dict:
    return {"epoch": epoch, "guide": guide.state_dict(), "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict() if scheduler is not None else None,
            "elbo_train": list(history.elbo_train), "seconds": history.seconds, "rng": rng_state(batches)}


def _resume(checkpoint: Checkpoint, guide, optimizer, scheduler, history: TrainingHistory, batches) -> int:
    """Load the checkpoint into the training objects; returns the number of epochs already done."""
    state = checkpoint.load(next(guide.parameters()).device)
    guide.load_state_dict(state["guide"])
    optimizer.load_state_dict(state["optimizer"])
    if scheduler is not None and state["scheduler"] is not None:
        scheduler.load_state_dict(state["scheduler"])
    history.elbo_train[:] = state["elbo_train"]
    history.seconds = state["seconds"]
    restore_rng_state(state["rng"], batches)
    return int(state["epoch"])


def run_svi(
    model: Callable,
    guide: torch.nn.Module,
    epoch_batches: Callable[[int], Iterable[tuple]],
    n_epochs: int,
    lr: float = 0.002,
    clip_norm: float | None = None,
    history: TrainingHistory | None = None,
    name: str = "training",
    log_every: int | None = None,
    loss_fn: Callable | None = None,
    schedule: Schedule = Schedule(),
    scale_lr_factor: float = 1.0,
    checkpoint: Checkpoint | None = None,
    on_epoch: Callable[[int], None] | None = None,
) -> TrainingHistory:
    """Train ``guide`` against ``model``; ``epoch_batches(epoch)`` yields the model arguments per step.

    ``loss_fn(model, guide, *args)`` returns the −ELBO to minimise; default: pyro's 1-particle Trace_ELBO.
    ``checkpoint``: resume from it when it exists, save it every ``checkpoint.every`` epochs, and on
    SIGTERM save it after the current epoch and then die of that signal (exit 143, which the pipeline
    retries), so a preempted task loses at most one epoch.
    ``on_epoch(done)``: called after each epoch with the number of epochs done (e.g. to score the guide
    along training, ``bench/trace_training.py``).
    """
    history = history or TrainingHistory()
    retain_freed_memory()
    scales = getattr(guide, "raw_scales", None)
    if scale_lr_factor != 1.0 and scales is not None:  # the guide's scale parameters at a lower learning rate
        scale_ids = {id(p) for p in scales.parameters()}
        groups = [{"params": [p for p in guide.parameters() if id(p) not in scale_ids]},
                  {"params": list(scales.parameters()), "lr": lr * scale_lr_factor}]
        optimizer = _adam(groups, lr)
    else:
        optimizer = _adam(guide.parameters(), lr)
    loss_fn = loss_fn or Trace_ELBO().differentiable_loss
    scheduler = lr_scheduler(optimizer, schedule, lr, n_epochs)
    log_every = log_every or max(1, n_epochs // 20)
    first_epoch = 0
    if checkpoint is not None and checkpoint.exists():
        first_epoch = _resume(checkpoint, guide, optimizer, scheduler, history, epoch_batches)
        log.info("%s: resuming from checkpoint %s after epoch %d/%d", name, checkpoint.path, first_epoch, n_epochs)
    with sigterm_flag(checkpoint is not None) as terminated:
        _epochs(model, guide, epoch_batches, range(first_epoch, n_epochs), optimizer, scheduler, loss_fn, clip_norm,
                history, name, log_every, schedule, checkpoint, terminated, on_epoch)
    return history


# Epochs between reads of the step losses from the device (see PendingLosses); a diverged run is caught at
# the next read, so at most this many epochs late, and still before any checkpoint or export.
READ_LOSSES_EVERY = 50


class PendingLosses:
    """Step losses kept as device tensors until they are needed, then read in one transfer.

    ``loss.item()`` after every step makes the host wait for the device to finish that step before it may queue
    the next one; on a GPU the launch work of step n+1 could otherwise run while step n computes. The values
    (float32 losses, summed per epoch in Python) are the same as reading each at once.
    """

    def __init__(self) -> None:
        self.epochs: list[tuple[int, list[torch.Tensor], float]] = []

    def add(self, epoch: int, losses: list[torch.Tensor], lr: float) -> None:
        self.epochs.append((epoch, losses, lr))

    def read_into(self, history: TrainingHistory, name: str, n_epochs: int) -> None:
        """Append each pending epoch's mean −ELBO to ``history``; raise at the first epoch that is not finite."""
        if not self.epochs:
            return
        values = iter(torch.stack([loss for _, losses, _ in self.epochs for loss in losses]).tolist())
        for epoch, losses, lr in self.epochs:
            mean = sum(next(values) for _ in losses) / len(losses)
            history.elbo_train.append(mean)
            if not math.isfinite(mean):
                self.epochs.clear()
                raise TrainingDivergedError(
                    f"{name}: the -ELBO became {mean} at epoch {epoch + 1}/{n_epochs} (learning rate {lr:.3g}): "
                    "training diverged and nothing was exported. Train again with a lower learning rate (the "
                    "command's --lr; pipeline: --map_lr for the mapping), or with larger minibatches.")
        self.epochs.clear()


def _epochs(model, guide, epoch_batches, epochs: range, optimizer, scheduler, loss_fn, clip_norm,
            history: TrainingHistory, name: str, log_every: int, schedule: Schedule, checkpoint: Checkpoint | None,
            terminated: list[bool], on_epoch: Callable[[int], None] | None = None) -> None:
    """The training loop of :func:`run_svi` over ``epochs``."""
    n_epochs = epochs.stop
    start = time.perf_counter()
    seconds_before = history.seconds
    pending = PendingLosses()
    for epoch in epochs:
        losses = []
        for args in epoch_batches(epoch):
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(model, guide, *args)
            loss.backward()
            if clip_norm is not None:
                torch.nn.utils.clip_grad_norm_(guide.parameters(), clip_norm)
            optimizer.step()
            losses.append(loss.detach())
        pending.add(epoch, losses, optimizer.param_groups[0]["lr"])
        if scheduler is not None:
            scheduler.step()
        done = epoch + 1
        log_now = done % log_every == 0 or done == n_epochs
        checkpoint_now = checkpoint is not None and done % checkpoint.every == 0 and done < n_epochs
        if (schedule.tol is not None or log_now or checkpoint_now or terminated[0]
                or done % READ_LOSSES_EVERY == 0):
            pending.read_into(history, name, n_epochs)
        stop = plateaued(history.elbo_train, schedule)
        if on_epoch is not None:
            on_epoch(done)
        periodic = checkpoint_now and not stop
        if periodic or terminated[0]:
            history.seconds = seconds_before + time.perf_counter() - start
            checkpoint.save(_training_state(done, guide, optimizer, scheduler, history, epoch_batches))
        if terminated[0]:
            log.warning("%s: SIGTERM received; checkpoint saved after epoch %d/%d, stopping", name, done, n_epochs)
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGTERM)
        if log_now or stop:
            elapsed = time.perf_counter() - start
            rate = (epoch + 1 - epochs.start) / elapsed
            log.info("%s epoch %d/%d  -ELBO %.4e  (%.2f epochs/s, ETA %s)", name, epoch + 1, n_epochs,
                     history.elbo_train[-1], rate, format_eta((n_epochs - epoch - 1) / rate))
        if stop:
            log.info("%s: -ELBO changed by less than %g over the last %d epochs; stopping at epoch %d",
                     name, schedule.tol, schedule.window, epoch + 1)
            history.stopped_early = True
            break
    pending.read_into(history, name, n_epochs)
    history.seconds = seconds_before + time.perf_counter() - start
