"""bench/heap_monitor.py: a process's resident memory split by kind of mapping, read from /proc."""

from __future__ import annotations

import mmap
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from heap_monitor import KINDS, mapping_processes, resident_by_kind  # noqa: E402

pytestmark = pytest.mark.skipif(not Path("/proc/self/smaps").exists(), reason="needs Linux /proc")


def test_the_kinds_add_up_to_the_process_resident_memory():
    kib = resident_by_kind(os.getpid())
    assert set(kib) == set(KINDS)
    with open("/proc/self/status") as status:
        vm_rss = next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))
    assert abs(sum(kib.values()) - vm_rss) < 0.05 * vm_rss  # the same pages, read a moment apart


def test_a_large_anonymous_mapping_is_counted_as_such():
    before = resident_by_kind(os.getpid())
    block = mmap.mmap(-1, 160 * 2**20, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)  # as glibc maps a large block
    block.write(b"x" * len(block))  # resident once touched
    after = resident_by_kind(os.getpid())
    block.close()
    assert after["anon_large"] - before["anon_large"] > 150 * 1024
    assert abs(after["main_heap"] - before["main_heap"]) < 50 * 1024


def test_a_process_that_has_gone_gives_none():
    assert resident_by_kind(2**22 + 12345) is None


def test_upstreams_mapping_script_is_followed_as_well_as_ours():
    # a two-thread python process whose command line names upstream's script, as the harness starts it
    code = "import threading, time; threading.Thread(target=time.sleep, args=(30,)).start(); time.sleep(30)"
    proc = subprocess.Popen([sys.executable, "-c", code, "bench/upstream_map.py", "--outdir", "/tmp/up_seed0"])
    try:
        for _ in range(100):  # until its second thread has started
            found = {pid: (run, threads) for pid, run, threads in mapping_processes()}
            if proc.pid in found:
                break
            time.sleep(0.05)
        assert found.get(proc.pid) == ("up_seed0", 2)
    finally:
        proc.kill()
        proc.wait()
