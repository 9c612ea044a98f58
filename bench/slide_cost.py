"""What the cost scripts on a ``run_scale.py`` slide share: its options, its bins with counts, and how far
the process's resident memory rises during the timed call.

    args = slide_parser(__doc__).parse_args()
    slide = read_slide(args)
    with ResidentMemory() as memory:
        work(slide.X)
    print(memory.report("the call"))
"""

from __future__ import annotations

import argparse
import resource
import threading
from pathlib import Path

import anndata as ad
import numpy as np
import psutil

MIB = 2**20
HERE = Path(__file__).resolve().parent


def slide_parser(doc: str | None) -> argparse.ArgumentParser:
    """Options --workdir and --dataset (a folder that ``run_scale.py`` made; default the 200,000-bin slide)."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, default=HERE / "work")
    parser.add_argument("--dataset", default="hd_200000x5000x30")
    return parser


def read_slide(args: argparse.Namespace) -> ad.AnnData:
    """The slide's bins with counts (the mapping drops the others), as a view."""
    slide = ad.read_h5ad(args.workdir / args.dataset / "hd.h5ad")
    return slide[np.asarray(slide.X.sum(axis=1)).ravel() > 0]


class ResidentMemory:
    """Resident memory before the block, its sampled peak during it, the process's high-water mark after, and the
    minor page faults the block took."""

    def __init__(self, every_s: float = 0.05) -> None:
        self.every_s = every_s
        self.process = psutil.Process()
        self.before = self.peak = self.high_water = 0
        self.faults = 0
        self._done = threading.Event()
        self._sampler = threading.Thread(target=self._sample)

    def _sample(self) -> None:
        while not self._done.wait(self.every_s):
            self.peak = max(self.peak, self.process.memory_info().rss)

    def __enter__(self) -> ResidentMemory:
        self.before = self.peak = self.process.memory_info().rss
        self.faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        self._sampler.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._sampler.join()
        usage = resource.getrusage(resource.RUSAGE_SELF)
        self.high_water = usage.ru_maxrss * 1024  # Linux: KiB
        self.faults = usage.ru_minflt - self.faults

    def report(self, what: str) -> str:
        return (f"resident memory: {self.before / MIB:.0f} MiB before {what}, peak {self.peak / MIB:.0f} MiB "
                f"(+{(self.peak - self.before) / MIB:.0f}); kernel high-water mark {self.high_water / MIB:.0f} MiB; "
                f"{self.faults} minor page faults (each a 4 KiB page mapped and zero-filled)")
