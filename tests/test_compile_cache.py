"""The compile cache: a second task reads the compiled objective from --compile-cache-dir instead of compiling."""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import torch
from torch._inductor import codecache

from cell2location_nf.inference import compile as compile_settings

CLI = [str(Path(sys.executable).parent / "cell2location-nf")]
CACHE_LINE = re.compile(r"mapping: (\d+) compiled graphs read from the compile cache \((.+)\), (\d+) compiled now")


def _map_compiled(results: Path, outdir: Path, cache: Path) -> tuple[int, str, int]:
    spatial = sorted(str(p) for p in (results / "spatial").glob("*/*.prepared.h5ad"))
    command = [*CLI, "map-spatial", "--signatures", str(results / "reference" / "reference.signatures.csv"),
               "--outdir", str(outdir), "--max-epochs", "30", "--num-samples", "20", "--n-cells-per-location", "9",
               "--compile", "--compile-cache-dir", str(cache), *spatial]
    env = {k: v for k, v in os.environ.items() if k != "TORCHINDUCTOR_CACHE_DIR"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    (line,) = CACHE_LINE.findall(result.stderr)
    return int(line[0]), line[1], int(line[2])


def test_a_second_run_reads_the_compiled_objective_from_the_cache(test_profile_run, tmp_path):
    workdir, _ = test_profile_run
    results, cache = workdir / "results", tmp_path / "compile-cache"
    read, folder, compiled = _map_compiled(results, tmp_path / "first", cache)
    assert (read, folder) == (0, str(cache.resolve())) and compiled > 0
    assert any(cache.iterdir())
    headers = {p: p.stat().st_mtime_ns for p in (cache / "precompiled_headers").glob("*.gch")}
    assert headers  # inductor's precompiled C++ headers are kept with the cache, not in /tmp
    read_again, _, compiled_again = _map_compiled(results, tmp_path / "second", cache)
    assert (read_again, compiled_again) == (compiled, 0)
    assert {p: p.stat().st_mtime_ns for p in headers} == headers  # used again, not rebuilt
    for table in sorted((tmp_path / "first").glob("*.cell_abundance_*.csv")):  # the cached kernels compute the same
        pd.testing.assert_frame_equal(pd.read_csv(table), pd.read_csv(tmp_path / "second" / table.name))


def test_the_pipelines_training_tasks_keep_their_cache_in_the_work_directory(test_profile_run):
    workdir, _ = test_profile_run
    assert (workdir / "work" / "compile-cache").is_dir()  # created by the tasks, from --compile-cache-dir


def test_an_unwritable_cache_folder_only_turns_the_cache_off(tmp_path, monkeypatch, caplog):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "before"))
    with caplog.at_level(logging.WARNING):
        assert compile_settings.use_compile_cache(str(blocker / "cache")) is None
    assert "Compile cache off" in caplog.text and str(blocker / "cache") in caplog.text
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(tmp_path / "before")
    assert compile_settings.use_compile_cache(str(tmp_path / "cache")) == tmp_path / "cache"
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str((tmp_path / "cache").resolve())


def test_precompiled_headers_follow_the_cache_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(codecache, "_HEADER_DIR", codecache._HEADER_DIR)
    monkeypatch.setattr(codecache, "_HEADER_LOCK_DIR", codecache._HEADER_LOCK_DIR)
    headers = compile_settings.keep_precompiled_headers_with_cache()
    assert headers == tmp_path / "cache" / "precompiled_headers"
    assert (codecache._HEADER_DIR, codecache._HEADER_LOCK_DIR) == (str(headers), str(headers / "locks"))


def _isa_choice(cache: Path, code: str) -> str:
    env = dict(os.environ, TORCHINDUCTOR_CACHE_DIR=str(cache))
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_the_background_probe_makes_inductors_choice_of_vector_instructions(tmp_path):
    pick = "from torch._inductor.cpu_vec_isa import pick_vec_isa; print(pick_vec_isa())"
    probed_first = ("import os, pathlib\n"
                    "from cell2location_nf.inference.compile import probe_cpu_isa_in_background\n"
                    "probe_cpu_isa_in_background().join()\n"
                    "print(len(list(pathlib.Path(os.environ['TORCHINDUCTOR_CACHE_DIR']).rglob('*.load_ok'))))\n"
                    + pick)
    probed_builds, probed_choice = _isa_choice(tmp_path / "probed", probed_first).splitlines()
    assert probed_choice == _isa_choice(tmp_path / "plain", pick)
    if torch.backends.cpu.get_cpu_capability() != "DEFAULT":  # a vector ISA: the probe's loaded test builds
        assert int(probed_builds) > 0


HEADER_FIRST = """
import json, torch
from cell2location_nf.inference.compile import build_kernel_header_in_background, keep_precompiled_headers_with_cache
headers = keep_precompiled_headers_with_cache()
build_kernel_header_in_background().join()
built = sorted(p.name for p in headers.glob('*.gch'))
double_sin = torch.compile(lambda x: (2 * x).sin())
x = torch.linspace(0, 1, 64)
torch.testing.assert_close(double_sin(x), (2 * x).sin())
print(json.dumps([built, sorted(p.name for p in headers.glob('*.gch'))]))
"""


def test_the_header_built_in_the_background_is_the_one_inductors_kernels_use(tmp_path):
    env = dict(os.environ, TORCHINDUCTOR_CACHE_DIR=str(tmp_path / "cache"))
    result = subprocess.run([sys.executable, "-c", HEADER_FIRST], capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr
    built, after_a_kernel = json.loads(result.stdout.strip().splitlines()[-1])
    assert len(built) == 1  # built on the thread, before any kernel was compiled
    assert after_a_kernel == built  # inductor's first kernel found it there and built no other
