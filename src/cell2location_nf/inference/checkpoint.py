"""Training checkpoints, so that a preempted task resumes where it stopped instead of starting over.

A checkpoint holds everything the next epoch depends on: the guide's parameters, the optimiser and
learning-rate schedule, the -ELBO history and every random-number generator (torch, CUDA, numpy,
python and the minibatch shuffler). Resuming from it continues the same trajectory, bit for bit on
the CPU. Its folder is named by a hash of the input files' bytes and the training settings: a
retried task runs in a new work directory with the same inputs and finds it; a run with other inputs
or settings never picks it up.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import __version__
from ..io.write import atomic_write

log = logging.getLogger(__name__)

STATE_FILE = "training_state.pt"
FUSION_ROOT = Path("/fusion")  # where Fusion mounts object storage inside a task: /fusion/<scheme>/<bucket>/...
GCSFUSE_ROOT = Path("/mnt/disks")  # where Google Batch mounts the work bucket without Fusion: /mnt/disks/<bucket>/...
CLOUD_SCHEMES = ("s3", "gs", "az")


@dataclass(frozen=True)
class Checkpoint:
    """One training run's state file, written every ``every`` epochs (and on SIGTERM)."""

    path: Path
    every: int

    def exists(self) -> bool:
        return self.path.is_file()

    def save(self, state: dict[str, Any]) -> None:
        """Write atomically: a kill during the write leaves the previous checkpoint intact."""
        atomic_write(self.path, lambda tmp: torch.save(state, tmp))

    def load(self, device: torch.device | str = "cpu") -> dict[str, Any]:
        return torch.load(self.path, map_location=device, weights_only=True)

    def discard(self) -> None:
        """Remove the checkpoint and its folder once the task's outputs are written."""
        shutil.rmtree(self.path.parent, ignore_errors=True)


def fingerprint(stage: str, files: Iterable[str | Path], settings: dict[str, Any]) -> str:
    """Hash of the stage, package version, training settings and every input file's bytes."""
    digest = hashlib.sha256()
    digest.update(json.dumps({"stage": stage, "version": __version__, "settings": settings},
                             sort_keys=True, default=str).encode())
    for path in sorted((Path(f) for f in files), key=lambda p: p.name):
        digest.update(path.name.encode())
        with path.open("rb") as handle:
            while chunk := handle.read(1 << 22):
                digest.update(chunk)
    return digest.hexdigest()[:24]


def local_directory(root: str) -> Path | None:
    """``root`` as a path this task can write: object-store URIs map to the Fusion mount, or on Google Batch
    to the bucket's gcsfuse mount, when present; None when the task cannot reach it."""
    scheme, sep, rest = root.partition("://")
    if not sep:
        return Path(root)
    if scheme in CLOUD_SCHEMES and (FUSION_ROOT / scheme).is_dir():
        return FUSION_ROOT / scheme / rest
    if scheme == "gs" and (GCSFUSE_ROOT / rest.split("/", 1)[0]).is_dir():
        return GCSFUSE_ROOT / rest
    return None


def checkpoint_for(root: str | None, every: int, stage: str, files: Iterable[str | Path],
                   settings: dict[str, Any]) -> Checkpoint | None:
    """The checkpoint of this stage and these inputs under ``root``; None when checkpointing is off."""
    if not root or every <= 0:
        return None
    directory = local_directory(root)
    if directory is None:
        log.warning("Checkpoints are off: '%s' is not reachable as a path inside this task (object storage needs "
                    "Fusion, or Google Batch's bucket mount). Set --checkpoint-dir to a mounted or shared folder.",
                    root)
        return None
    checkpoint = Checkpoint(directory / f"{stage}-{fingerprint(stage, files, settings)}" / STATE_FILE, every)
    log.info("Checkpoints every %d epochs in %s", every, checkpoint.path.parent)
    return checkpoint


def rng_state(batches: object) -> dict[str, Any]:
    """Every random-number generator a training step draws from, as tensors and plain values."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": pos,
                  "has_gauss": has_gauss, "cached": cached},
        "python": random.getstate(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }
    generator = getattr(batches, "generator", None)
    if isinstance(generator, torch.Generator):
        state["batches"] = generator.get_state()
    return state


def restore_rng_state(state: dict[str, Any], batches: object) -> None:
    torch.set_rng_state(state["torch"].cpu())
    np_state = state["numpy"]
    np.random.set_state((np_state["kind"], np_state["keys"].cpu().numpy().astype(np.uint32), np_state["pos"],
                         np_state["has_gauss"], np_state["cached"]))
    random.setstate(state["python"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
    if "batches" in state:
        batches.generator.set_state(state["batches"].cpu())
