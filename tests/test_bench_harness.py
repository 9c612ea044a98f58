"""The benchmark harness's measurements (bench/run_benchmark.py): peak memory, where it came from, failed commands."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from run_benchmark import OURS, RssSample, ToolFailedError, peak_source, pipeline_task_env, run_measured  # noqa: E402

from cell2location_nf.inference.allocator import TCACHE_OFF  # noqa: E402

# Holds 600 MiB for a few milliseconds, far less than the harness's 0.5 s between samples, then idles.
SPIKE = "import time; b = bytearray(600 * 2**20); b[::4096] = b'x' * len(b[::4096]); del b; time.sleep(1.2)"


def test_a_spike_between_two_samples_still_counts(tmp_path):
    cost = run_measured([sys.executable, "-c", SPIKE], tmp_path / "log.txt", threads=1)
    assert cost["peak_rss_mib"] >= 600
    assert 1.2 <= cost["wall_s"] < 10


# A child process holds 300 MiB for 1.5 s, over two of the harness's samples, while its parent waits for it.
CHILD_HOLDS = ("import subprocess, sys; subprocess.run([sys.executable, '-c', "
               "\"import time; b = bytearray(300 * 2**20); b[::4096] = b'x' * len(b[::4096]); time.sleep(1.5)\"])")


def test_the_peak_names_the_process_that_held_it_and_every_sample_is_kept(tmp_path):
    cost = run_measured([sys.executable, "-c", CHILD_HOLDS], tmp_path / "log.txt", threads=1)
    rows = [line.split("\t") for line in (tmp_path / "rss_samples.tsv").read_text().splitlines()[1:]]
    assert len(rows) >= 3 and [float(r[0]) for r in rows] == sorted(float(r[0]) for r in rows)
    where = re.fullmatch(r"largest sample at ([\d.]+) s: \S+ ([\d,]+) \+ \S+ ([\d,]+)", cost["peak_rss_where"])
    assert where, cost["peak_rss_where"]  # the child first, then its parent
    total, processes = next((int(r[1]), r[2]) for r in rows if r[0] == where[1])
    assert total >= max(int(r[1]) for r in rows) - 1  # the largest sample (the file rounds to MiB)
    named = [int(p.rsplit(":", 1)[1]) for p in processes.split()]
    assert len(named) == 2 and named[0] >= 300 > named[1] and abs(total - sum(named)) <= 1
    assert cost["peak_rss_mib"] >= total - 1


def test_the_harness_own_memory_is_not_counted(tmp_path):
    """A process keeps its memory's high-water mark from before exec; the harness's 400 MiB must not count."""
    ballast = bytearray(400 * 2**20)
    ballast[::4096] = b"x" * len(ballast[::4096])
    cost = run_measured([sys.executable, "-c", "import time; time.sleep(0.6)"], tmp_path / "log.txt", threads=1)
    assert len(ballast) and cost["peak_rss_mib"] < 150, cost


def test_the_peak_source_says_when_the_high_water_mark_was_between_samples():
    sample = RssSample(12.5, [("python", 900 * 2**20), ("cc1plus", 300 * 2**20)])
    assert sample.total == 1200 * 2**20
    assert peak_source(sample, 1000 * 2**20) == "largest sample at 12.5 s: python 900 + cc1plus 300"
    assert peak_source(sample, 1500 * 2**20) == (
        "kernel high-water mark of one process, 1,500, between samples "
        "(largest sample at 12.5 s: python 900 + cc1plus 300)")


def test_a_failed_command_reports_its_exit_status_and_cost(tmp_path):
    with pytest.raises(ToolFailedError) as failure:
        run_measured([sys.executable, "-c", "import sys; print('bad input'); sys.exit(3)"], tmp_path / "log.txt", 1)
    assert failure.value.returncode == 3 and failure.value.cost["peak_rss_mib"] > 0
    assert "bad input" in (tmp_path / "log.txt").read_text()


def test_a_command_that_cannot_start_fails_with_its_name_in_the_log(tmp_path):
    with pytest.raises(ToolFailedError) as failure:
        run_measured([str(tmp_path / "no-such-tool"), "--help"], tmp_path / "log.txt", 1)
    assert failure.value.returncode == 127
    assert f"cannot run {tmp_path / 'no-such-tool'}" in (tmp_path / "log.txt").read_text()


def test_a_killed_command_reports_the_signal(tmp_path):
    with pytest.raises(ToolFailedError) as failure:
        run_measured([sys.executable, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"],
                     tmp_path / "log.txt", 1)
    assert failure.value.returncode == -9


PRINT_CACHE = ("import os, pathlib; d = os.environ['TORCHINDUCTOR_CACHE_DIR']; "
               "print(d, sorted(pathlib.Path(d).iterdir()))")


def test_every_command_compiles_from_an_empty_cache_that_is_removed_after(tmp_path, monkeypatch):
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    for run in ("first", "second"):
        run_measured([sys.executable, "-c", PRINT_CACHE + "; (pathlib.Path(d) / 'kernel').write_text('x')"],
                     tmp_path / f"{run}.txt", threads=1)
    first, second = ((tmp_path / f"{run}.txt").read_text().split(" ", 1) for run in ("first", "second"))
    assert first[1].strip() == second[1].strip() == "[]"  # the second did not see the first's kernel
    assert first[0] != second[0] and not Path(first[0]).exists() and not Path(second[0]).exists()


def test_a_cache_folder_set_by_the_caller_is_kept(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "mine"))
    (tmp_path / "mine").mkdir()
    run_measured([sys.executable, "-c", PRINT_CACHE], tmp_path / "log.txt", threads=1)
    assert (tmp_path / "log.txt").read_text().split(" ", 1)[0] == str(tmp_path / "mine")


def test_our_commands_run_with_the_pipeline_tasks_malloc_setting(monkeypatch):
    monkeypatch.delenv("GLIBC_TUNABLES", raising=False)
    assert pipeline_task_env([*OURS, "map-spatial", "--help"]) == {"GLIBC_TUNABLES": TCACHE_OFF}
    assert pipeline_task_env(["bench/.venv-upstream/bin/python", "bench/upstream_map.py"]) == {}  # upstream as is
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.malloc.tcache_count=7")  # the caller's own setting wins
    assert pipeline_task_env([*OURS, "map-spatial"]) == {}
