"""Training steps reuse freed memory instead of page-faulting fresh pages every step (inference/allocator.py)."""

from __future__ import annotations

import json
import os
import re
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

from cell2location_nf.inference.allocator import TCACHE_OFF, TORCH_HUGE_PAGES

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


PAGES_PER_ARRAY = 64 * 2**20 // 4096


def probe(mode: str, env: dict | None = None) -> dict:
    done = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True, env=env)
    return json.loads(done.stdout)


def test_freed_step_arrays_are_reused_without_page_faults():
    retained, default = probe("retain"), probe("default")
    if not retained["applied"]:
        pytest.skip("not glibc: malloc thresholds cannot be set")
    assert statistics.median(default["faults"]) >= PAGES_PER_ARRAY  # glibc's default: fresh pages every step
    assert statistics.median(retained["faults"]) < PAGES_PER_ARRAY / 100  # retained: the freed block is reused
    assert sum(retained["faults"]) < sum(default["faults"]) / 2


def test_thresholds_from_the_environment_are_left_alone():
    for env in ({"GLIBC_TUNABLES": "glibc.malloc.tcache_count=0:glibc.malloc.mmap_threshold=1048576"},
                {"MALLOC_TRIM_THRESHOLD_": "1048576"}):
        assert probe("retain", dict(os.environ, **env))["applied"] is False, env


def test_the_pipelines_tcache_setting_keeps_our_thresholds():
    retained = probe("retain", dict(os.environ, GLIBC_TUNABLES=TCACHE_OFF))
    if not retained["applied"]:
        pytest.skip("not glibc: malloc thresholds cannot be set")
    assert statistics.median(retained["faults"]) < PAGES_PER_ARRAY / 100


# Frees seven 64-byte blocks and reads how many bytes glibc's fast bins then hold (mallinfo2, glibc >= 2.33):
# with the per-thread cache on, the cache takes them and the fast bins stay empty.
FREED_SMALL_BLOCKS = """
import ctypes, json
libc = ctypes.CDLL(None)
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, (ctypes.c_size_t,)
libc.free.argtypes = (ctypes.c_void_p,)
class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                 "keepcost")]
libc.mallinfo2.restype = MallInfo2
before = libc.mallinfo2().fsmblks
blocks = [libc.malloc(64) for _ in range(7)]
for block in blocks:
    libc.free(block)
print(json.dumps(libc.mallinfo2().fsmblks - before))
"""


def freed_to_fast_bins(env: dict) -> int:
    done = subprocess.run([sys.executable, "-c", FREED_SMALL_BLOCKS], capture_output=True, text=True, env=env)
    if done.returncode != 0:
        pytest.skip(f"glibc's mallinfo2 is not available: {done.stderr.strip()[-200:]}")
    return json.loads(done.stdout)


def test_the_pipelines_setting_switches_glibcs_per_thread_cache_off():
    env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
    assert freed_to_fast_bins(env) == 0  # the cache holds them
    assert freed_to_fast_bins(dict(env, GLIBC_TUNABLES=TCACHE_OFF)) >= 7 * 64  # no cache: the fast bins do


def test_pipeline_tasks_start_with_the_tcache_setting():
    config = (Path(__file__).resolve().parents[1] / "nextflow.config").read_text()
    env_scope = re.search(r"^env \{(.*?)^\}", config, re.S | re.M).group(1)
    assert re.search(r"GLIBC_TUNABLES\s*=\s*'([^']*)'", env_scope).group(1) == TCACHE_OFF


# Ask for huge pages as the CLI does, then import torch, fill a 64 MiB tensor and read how much of the mapping
# that holds it the kernel backs with transparent huge pages (/proc/self/smaps).
HUGE_PAGE_PROBE = """
import json
from cell2location_nf.inference.allocator import request_huge_pages
asked = request_huge_pages()
import torch
tensor = torch.ones(16 * 2**20)  # kept: freed, its mapping would be gone
address = tensor.data_ptr()
inside, huge_kib = False, 0
for line in open("/proc/self/smaps"):
    first = line.split()[0]
    if "-" in first and not first.endswith(":"):
        low, high = (int(end, 16) for end in first.split("-"))
        inside = low <= address < high
    elif inside and first == "AnonHugePages:":
        huge_kib = int(line.split()[1])
print(json.dumps({"asked": asked, "huge_mib": huge_kib // 1024}))
"""


def huge_page_policy() -> str:
    """The kernel's transparent-huge-page policy (always, madvise or never), or '' where there is none."""
    setting = Path("/sys/kernel/mm/transparent_hugepage/enabled")
    match = re.search(r"\[(\w+)\]", setting.read_text()) if setting.exists() else None
    return match.group(1) if match else ""


def huge_page_probe(env: dict) -> dict:
    done = subprocess.run([sys.executable, "-c", HUGE_PAGE_PROBE], capture_output=True, text=True, check=True, env=env)
    return json.loads(done.stdout)


def test_torch_tensors_get_huge_pages_when_requested():
    if huge_page_policy() not in ("always", "madvise"):
        pytest.skip("this kernel offers no transparent huge pages")
    env = {k: v for k, v in os.environ.items() if k != TORCH_HUGE_PAGES}
    requested = huge_page_probe(env)
    assert requested["asked"] is True
    assert requested["huge_mib"] >= 32  # most of the 64 MiB (its ends need not fill whole 2 MiB pages)
    declined = huge_page_probe(dict(env, **{TORCH_HUGE_PAGES: "0"}))  # the user's own value wins
    assert declined["asked"] is False
    if huge_page_policy() == "madvise":  # under "always" every large mapping gets them anyway
        assert declined["huge_mib"] == 0


# The console entry point sets the variable before a subcommand imports torch (printed as the process exits).
ENTRY_POINT = """
import atexit, os, sys
atexit.register(lambda: print("huge pages:", os.environ.get("THP_MEM_ALLOC_ENABLE", "unset"), "torch" in sys.modules))
sys.argv = ["cell2location-nf", "--version"]
from cell2location_nf.cli import main
main()
"""


@pytest.mark.parametrize(("preset", "expected"), [(None, "1"), ("0", "0")])
def test_the_command_line_requests_huge_pages_before_torch_loads(preset, expected):
    env = {k: v for k, v in os.environ.items() if k != TORCH_HUGE_PAGES}
    if preset is not None:
        env[TORCH_HUGE_PAGES] = preset
    done = subprocess.run([sys.executable, "-c", ENTRY_POINT], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == f"huge pages: {expected} False"
