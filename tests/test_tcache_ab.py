"""bench/tcache_ab.py: the alternation of glibc's cache settings, and the allocator's share from perf's samples."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from tcache_ab import order, perf_shares  # noqa: E402


@pytest.mark.parametrize("rounds", [1, 2, 3, 4, 5])
def test_each_setting_runs_once_per_round_and_a_steady_drift_cancels_over_pairs_of_rounds(rounds):
    runs = order(rounds)
    assert runs.count("off") == runs.count("on") == rounds
    assert all(sorted(runs[2 * r: 2 * r + 2]) == ["off", "on"] for r in range(rounds))
    if rounds % 2 == 0:  # a drift linear in time adds as much to each setting's mean position
        assert sum(i for i, s in enumerate(runs) if s == "off") == sum(i for i, s in enumerate(runs) if s == "on")


# A million 32 KiB arrays, allocated and freed one after another, none of them touched: glibc's
# malloc and free take a large share of the samples (numpy asks the C library for each array).
MALLOC_BOUND = "import numpy as np\nfor _ in range(1_000_000): np.empty(4096)"
COMPUTE_BOUND = "x = 0\nfor i in range(3_000_000): x += i * i"


@pytest.mark.skipif(shutil.which("perf") is None, reason="Linux perf is not installed")
def test_the_allocators_share_is_large_for_a_malloc_bound_loop_and_small_for_arithmetic(tmp_path):
    shares = {}
    for name, code in (("malloc", MALLOC_BOUND), ("compute", COMPUTE_BOUND)):
        record = tmp_path / f"{name}.data"
        command = ["perf", "record", "-q", "-F", "999", "-o", str(record), "--", sys.executable, "-c", code]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:  # perf present but not allowed here (perf_event_paranoid, a container)
            pytest.skip(f"perf record failed: {done.stderr.strip()[:200]}")
        shares[name] = perf_shares(record)
    (malloc_share, malloc_libc), (compute_share, _) = shares["malloc"], shares["compute"]
    assert malloc_libc >= malloc_share > 10 * max(compute_share, 0.1)
