"""Checks shared by the checkpoint tests: resumed training equals uninterrupted training."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cell2location_nf.io.model_store import load_model


def assert_same_parameters(resumed: Path, uninterrupted: Path) -> None:
    """Every guide parameter and the -ELBO history of two saved models are bit for bit equal."""
    a, b = load_model(resumed), load_model(uninterrupted)
    assert a.locs.keys() == b.locs.keys()
    for site in a.locs:
        np.testing.assert_array_equal(a.locs[site], b.locs[site], err_msg=site)
        np.testing.assert_array_equal(a.raw_scales[site], b.raw_scales[site], err_msg=site)
    np.testing.assert_array_equal(a.history, b.history)


def resumed_after_epoch(log: str, stage: str, total: int) -> int:
    """The epoch a run's log says it resumed after (checking the logged total)."""
    line = next(line for line in log.splitlines() if f"{stage}: resuming from checkpoint" in line)
    epoch, of = line.rsplit("after epoch ", 1)[1].split("/")
    assert int(of) == total
    return int(epoch)
