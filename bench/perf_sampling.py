"""Sample a stretch of this process with Linux ``perf record`` (for ``tcache_ab.py``'s allocator shares)."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def perf_record(output: Path | None) -> Iterator[None]:
    """Record the block at 499 Hz (CPU clock) into ``output``; without one, run it unrecorded."""
    if output is None:
        yield
        return
    recorder = subprocess.Popen(["perf", "record", "-q", "-F", "499", "-p", str(os.getpid()), "-o", str(output)])
    time.sleep(2)  # perf attaches to every thread before the block starts
    try:
        yield
    finally:
        recorder.send_signal(signal.SIGINT)  # perf writes its file and exits
        recorder.wait()
