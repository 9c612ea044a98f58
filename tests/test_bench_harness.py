"""The benchmark harness's measurements (bench/run_benchmark.py): peak memory and failed commands."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from run_benchmark import ToolFailedError, run_measured  # noqa: E402

# Holds 600 MiB for a few milliseconds, far less than the harness's 0.5 s between samples, then idles.
SPIKE = "import time; b = bytearray(600 * 2**20); b[::4096] = b'x' * len(b[::4096]); del b; time.sleep(1.2)"


def test_a_spike_between_two_samples_still_counts(tmp_path):
    cost = run_measured([sys.executable, "-c", SPIKE], tmp_path / "log.txt", threads=1)
    assert cost["peak_rss_mib"] >= 600
    assert 1.2 <= cost["wall_s"] < 10


def test_a_failed_command_reports_its_exit_status_and_cost(tmp_path):
    with pytest.raises(ToolFailedError) as failure:
        run_measured([sys.executable, "-c", "import sys; print('bad input'); sys.exit(3)"], tmp_path / "log.txt", 1)
    assert failure.value.returncode == 3 and failure.value.cost["peak_rss_mib"] > 0
    assert "bad input" in (tmp_path / "log.txt").read_text()


def test_a_killed_command_reports_the_signal(tmp_path):
    with pytest.raises(ToolFailedError) as failure:
        run_measured([sys.executable, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"],
                     tmp_path / "log.txt", 1)
    assert failure.value.returncode == -9
