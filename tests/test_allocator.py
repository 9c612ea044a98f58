"""Training steps reuse freed memory instead of page-faulting fresh pages every step (inference/allocator.py)."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys

import pytest

# Allocate and free a 64 MiB tensor 20 times, as a training step does with its (locations x genes) arrays,
# and count the page faults each time. (Blocks above 32 MiB always come from mmap by default; smaller ones
# do too until glibc's adaptive threshold catches up, which mixed sizes defeat.) The median step is
# compared: where the heap takes a few steps longer to settle (seen once in CI: 4 of 20 steps faulted),
# the steady state is still what every later training step sees.
PROBE = """
import json, resource, sys, torch
from cell2location_nf.inference.allocator import retain_freed_memory
applied = retain_freed_memory() if sys.argv[1] == "retain" else False
for _ in range(5):  # warm-up: the heap settles after a few blocks
    torch.ones(16384, 1024).sum()
faults = []
for _ in range(20):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    torch.ones(16384, 1024).sum()
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(json.dumps({"applied": applied, "faults": faults}))
"""


def probe(mode: str, env: dict | None = None) -> dict:
    done = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True, env=env)
    return json.loads(done.stdout)


def test_freed_step_arrays_are_reused_without_page_faults():
    retained, default = probe("retain"), probe("default")
    if not retained["applied"]:
        pytest.skip("not glibc: malloc thresholds cannot be set")
    pages_per_array = 64 * 2**20 // 4096
    assert statistics.median(default["faults"]) >= pages_per_array  # glibc's default: fresh pages every step
    assert statistics.median(retained["faults"]) < pages_per_array / 100  # retained: the freed block is reused
    assert sum(retained["faults"]) < sum(default["faults"]) / 2


def test_malloc_settings_from_the_environment_are_left_alone():
    env = dict(os.environ, GLIBC_TUNABLES="glibc.malloc.arena_max=2")
    assert probe("retain", env)["applied"] is False

