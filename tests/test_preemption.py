"""A preempted mapping task (SIGTERM midway, exit 143) is retried by the pipeline and resumes from its checkpoint,
ending bit for bit where an uninterrupted run of the same command ends (tolerance: none, on the CPU)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from cell2location_nf.io.model_store import load_model

from .pipeline_runs import ROOT, nextflow, trace_rows
from .training_checks import assert_same_parameters, resumed_after_epoch

pytestmark = pytest.mark.pipeline

PREEMPT_CONFIG = ROOT / "tests" / "nextflow" / "preempt_mapping.config"
EPOCHS = 600  # the first checkpoint (epoch 50) long before the end


def task_dir(workdir: Path, row: dict[str, str]) -> Path:
    (path,) = (workdir / "work").glob(f"{row['hash']}*")
    return path


def rerun_uninterrupted(task: Path, checkpoints: Path, target: Path) -> Path:
    """The task's own command in a fresh folder: same staged inputs, an empty checkpoint folder."""
    shutil.copytree(task, target, symlinks=True, ignore=lambda _, names: [n for n in names if n.endswith(".h5")])
    script = (task / ".command.sh").read_text()
    assert f"--checkpoint-dir '{checkpoints}'" in script
    (target / ".command.sh").write_text(script.replace(str(checkpoints), str(target / "fresh_checkpoints")))
    path = f"{Path(sys.executable).parent}:{ROOT / 'bin'}:/usr/bin:/bin"
    result = subprocess.run(["bash", ".command.sh"], cwd=target, capture_output=True, text=True, timeout=600,
                            env={"PATH": path})
    assert result.returncode == 0, result.stderr[-3000:]
    assert "resuming" not in result.stderr
    return target / "mapping.mapping_model.h5"


def test_preempted_mapping_is_retried_and_resumes_from_its_checkpoint(tmp_path):
    checkpoints = tmp_path / "checkpoints"
    result = nextflow(["-profile", "test", "--outdir", "results", "--map_max_epochs", str(EPOCHS),
                       "--checkpoint_every", "50", "--checkpoint_dir", str(checkpoints), "-c", str(PREEMPT_CONFIG)],
                      tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr

    attempts = [row for row in trace_rows(tmp_path / "results") if "CELL2LOCATION_MAP" in row["name"]]
    assert [(row["status"], row["exit"]) for row in attempts] == [("FAILED", "143"), ("COMPLETED", "0")]
    first, retry = (task_dir(tmp_path, row) for row in attempts)
    assert "SIGTERM received; checkpoint saved after epoch" in (first / ".command.err").read_text()
    assert 0 < resumed_after_epoch((retry / ".command.err").read_text(), "mapping", EPOCHS) < EPOCHS
    assert not any(checkpoints.iterdir()), "checkpoints are removed once the tasks succeed"

    uninterrupted = rerun_uninterrupted(retry, checkpoints, tmp_path / "uninterrupted")
    assert_same_parameters(retry / "mapping.mapping_model.h5", uninterrupted)
    assert len(load_model(uninterrupted).history) == EPOCHS
