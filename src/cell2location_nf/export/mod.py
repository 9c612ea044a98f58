"""The ``uns['mod']`` dict upstream's ``export_posterior`` writes, shared by both stages."""

from __future__ import annotations

import datetime
from collections.abc import Sequence

import numpy as np


def mod_header(model_name: str, factor_names: Sequence[str], var_names: Sequence[str],
               obs_names: Sequence[str]) -> dict:
    """Model name, date, factor filter/names and the var/obs names; ``post_sample_*`` dicts go beside it."""
    return {
        "model_name": model_name,
        "date": datetime.date.today().isoformat(),
        "factor_filter": [],
        "factor_names": np.array(list(factor_names), dtype=object),
        "var_names": np.array(list(var_names), dtype=object),
        "obs_names": np.array(list(obs_names), dtype=object),
    }
