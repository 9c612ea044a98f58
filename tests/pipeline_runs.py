"""Running the pipeline from tests: the Nextflow command, the trace of a run, and one shared test-profile run."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TEST_DATA = ROOT / "build" / "test_data"  # where conf/test.config expects it (make test-data)


def nextflow_cli(args: list[str], cwd: Path, path_first: tuple[Path, ...] = ()) -> subprocess.CompletedProcess:
    """``nextflow <args>`` with ``path_first`` and this venv's tools first on PATH."""
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([*map(str, path_first), str(Path(sys.executable).parent), env["PATH"]])
    env["NXF_ANSI_LOG"] = "false"
    return subprocess.run([str(ROOT / "scripts" / "nextflow"), *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=900)


def nextflow(args: list[str], cwd: Path, pipeline: Path = ROOT,
             path_first: tuple[Path, ...] = ()) -> subprocess.CompletedProcess:
    """``nextflow run <pipeline> <args>``."""
    return nextflow_cli(["run", str(pipeline), *args], cwd, path_first)


def trace_rows(outdir: Path) -> list[dict[str, str]]:
    (trace,) = sorted((outdir / "pipeline_info").glob("execution_trace_*.txt"))[-1:]
    with trace.open() as handle:
        return list(csv.DictReader(handle, delimiter="\t"))
