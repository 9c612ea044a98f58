"""Save and reload trained guide parameters as HDF5: arrays and JSON metadata, no pickle.

Layout: ``/locs/<site>``, ``/raw_scales/<site>`` (the guide's unconstrained parameters),
``/history/elbo_train``, ``/names/<key>`` (string lists such as var_names), and the JSON attribute
``metadata`` (model name, sizes, keys, training settings).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch

from .write import atomic_write

FORMAT_VERSION = 1


@dataclass
class StoredModel:
    locs: dict[str, np.ndarray]
    raw_scales: dict[str, np.ndarray]
    history: list[float]
    names: dict[str, list[str]]
    metadata: dict[str, Any]

    def guide_state(self) -> dict[str, torch.Tensor]:
        """A state dict for :class:`~cell2location_nf.models.guide.MeanFieldGuide`."""
        state = {f"locs.{k}": torch.from_numpy(v) for k, v in self.locs.items()}
        state.update({f"raw_scales.{k}": torch.from_numpy(v) for k, v in self.raw_scales.items()})
        return state


def save_model(path: str | Path, guide: torch.nn.Module, history: list[float], names: dict[str, list[str]],
               metadata: dict[str, Any]) -> Path:
    def write(tmp: Path) -> None:
        with h5py.File(tmp, "w") as f:
            f.attrs["format_version"] = FORMAT_VERSION
            f.attrs["metadata"] = json.dumps(metadata)
            for group in ("locs", "raw_scales"):
                for site, value in getattr(guide, group).items():
                    f.create_dataset(f"{group}/{site}", data=value.detach().cpu().numpy())
            f.create_dataset("history/elbo_train", data=np.asarray(history, dtype=np.float64))
            for key, values in names.items():
                f.create_dataset(f"names/{key}", data=np.array(values, dtype=object),
                                 dtype=h5py.string_dtype())

    return atomic_write(path, write)


def load_model(path: str | Path) -> StoredModel:
    with h5py.File(path, "r") as f:
        if f.attrs.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"'{path}' is not a cell2location-nf model file (format {FORMAT_VERSION})")
        return StoredModel(
            locs={k: v[()] for k, v in f["locs"].items()},
            raw_scales={k: v[()] for k, v in f["raw_scales"].items()},
            history=f["history/elbo_train"][()].tolist(),
            names={k: [s.decode() if isinstance(s, bytes) else s for s in v[()]] for k, v in f["names"].items()},
            metadata=json.loads(f.attrs["metadata"]),
        )
