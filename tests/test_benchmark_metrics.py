"""Benchmark metrics: per-type Pearson and the totals/composition split of Pearson over all entries."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cell2location_nf.benchmark.metrics import count_split, pearson_by_type, score


@pytest.fixture()
def truth() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    table = pd.DataFrame(rng.poisson(2.0, size=(300, 5)).astype(float), columns=[f"t{i}" for i in range(5)],
                         index=[f"s{i}" for i in range(300)])
    table["t4"] = 1.0  # constant: no Pearson for this type
    return table


def test_right_composition_with_wrong_totals_is_a_totals_error(truth):
    factor = np.random.default_rng(1).lognormal(0, 0.4, size=(len(truth), 1))
    estimate = truth * factor  # every spot's mixture exact, its total off by a spot-specific factor
    split = count_split(truth, estimate)
    assert split["composition_pearson"] == pytest.approx(1.0)
    totals = truth.sum(axis=1)
    assert split["totals_pearson"] == pytest.approx(np.corrcoef(totals * factor.ravel(), totals)[0, 1])
    assert split["totals_pearson"] < 0.99
    assert np.corrcoef(estimate.to_numpy().ravel(), truth.to_numpy().ravel())[0, 1] < split["composition_pearson"]


def test_per_type_pearson_leaves_out_constant_types_and_averages_into_the_score(truth):
    noisy = (truth + np.random.default_rng(2).normal(0, 1.0, size=truth.shape)).clip(lower=0)
    by_type = pearson_by_type(truth, noisy[truth.columns[::-1]])  # column order of the estimate is irrelevant
    assert list(by_type.index) == ["t0", "t1", "t2", "t3"]
    assert by_type["t0"] == pytest.approx(np.corrcoef(noisy["t0"], truth["t0"])[0, 1])
    assert score(truth, noisy)["pearson_per_type"] == pytest.approx(by_type.mean())
