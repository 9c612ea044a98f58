"""torch.compile with an eager fallback, shared by every compiled piece of the objective."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable

# Compile in this process: a pool of compile workers costs seconds to start and stop, and our few small
# graphs are compiled once per run (or read from inductor's on-disk cache). An explicit setting wins.
os.environ.setdefault("TORCHINDUCTOR_COMPILE_THREADS", "1")

import torch  # noqa: E402

log = logging.getLogger(__name__)


class CompiledOrEager:
    """Call ``fn`` through torch.compile when asked (compiled on first use), else eagerly.

    If compilation fails (no C++ compiler on CPU, no Triton on GPU) it warns once and runs ``fn`` eagerly
    from then on: the same values, only slower.
    """

    def __init__(self, fn: Callable, what: str):
        self.fn, self.what = fn, what
        self.compiled: Callable | None = None
        self.failed = False

    def __call__(self, use_compile: bool, *args):
        if use_compile and not self.failed:
            try:
                if self.compiled is None:
                    self.compiled = torch.compile(self.fn, dynamic=None)
                return self.compiled(*args)
            except Exception as err:
                log.warning("torch.compile of %s failed (%s); running it eagerly", self.what, err)
                self.failed = True
        return self.fn(*args)
