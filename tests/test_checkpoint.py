"""Training checkpoints: a killed training run resumes where it stopped and ends exactly where an
uninterrupted run with the same seed ends (tolerance: none, every parameter bit for bit on the CPU)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cell2location_nf.inference import checkpoint as ckpt

from .training_checks import assert_same_parameters, resumed_after_epoch

CLI = [str(Path(sys.executable).parent / "cell2location-nf")]
# Enough epochs that the first checkpoint (epoch 50 or 20) comes long before the end, few enough to keep CI short.
MAP_EPOCHS = 600
REF_EPOCHS = 300


def _published(test_profile_run) -> Path:
    workdir, _ = test_profile_run
    return workdir / "results"


def _mapping_command(results: Path, outdir: Path, checkpoint_dir: Path, every: int = 50) -> list[str]:
    spatial = sorted(str(p) for p in (results / "spatial").glob("*/*.prepared.h5ad"))
    return [*CLI, "map-spatial", "--signatures", str(results / "reference" / "reference.signatures.csv"),
            "--outdir", str(outdir), "--max-epochs", str(MAP_EPOCHS), "--num-samples", "20",
            "--n-cells-per-location", "9", "--no-compile", "--checkpoint-dir", str(checkpoint_dir),
            "--checkpoint-every", str(every), *spatial]


def _reference_command(results: Path, outdir: Path, checkpoint_dir: Path) -> list[str]:
    return [*CLI, "train-reference", "--reference", str(results / "reference" / "reference.prepared.h5ad"),
            "--outdir", str(outdir), "--max-epochs", str(REF_EPOCHS), "--batch-size", "300", "--num-samples", "20",
            "--no-compile", "--checkpoint-dir", str(checkpoint_dir), "--checkpoint-every", "20"]


def _state_files(checkpoint_dir: Path) -> list[Path]:
    return sorted(checkpoint_dir.glob(f"*/{ckpt.STATE_FILE}"))


def _run(command: list[str]) -> subprocess.CompletedProcess:
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def _interrupt_then_resume(command: list[str], checkpoint_dir: Path, sig: signal.Signals) -> str:
    """Start ``command``, send ``sig`` once a checkpoint exists, check it died of it, rerun; the rerun's log."""
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while not _state_files(checkpoint_dir):
        assert process.poll() is None, f"training ended before its first checkpoint: {process.stderr.read()[-3000:]}"
        assert time.monotonic() < deadline, "no checkpoint within 300 s"
        time.sleep(0.05)
    process.send_signal(sig)
    stderr = process.communicate(timeout=120)[1]
    assert process.returncode == -sig, f"expected death by {sig.name}, got {process.returncode}: {stderr[-3000:]}"
    if sig == signal.SIGTERM:
        assert "SIGTERM received; checkpoint saved after epoch" in stderr
    assert len(_state_files(checkpoint_dir)) == 1
    return _run(command).stderr


@pytest.fixture(scope="module")
def uninterrupted_mapping(test_profile_run, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("uninterrupted_mapping")
    _run(_mapping_command(_published(test_profile_run), out, out / "checkpoints"))
    return out / "mapping.mapping_model.h5"


@pytest.mark.pipeline
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_killed_mapping_resumes_to_the_uninterrupted_result(test_profile_run, uninterrupted_mapping, tmp_path, sig):
    checkpoints = tmp_path / "checkpoints"
    log = _interrupt_then_resume(_mapping_command(_published(test_profile_run), tmp_path, checkpoints), checkpoints,
                                 sig)
    assert 0 < resumed_after_epoch(log, "mapping", MAP_EPOCHS) < MAP_EPOCHS
    assert_same_parameters(tmp_path / "mapping.mapping_model.h5", uninterrupted_mapping)
    assert list(checkpoints.iterdir()) == [], "the checkpoint is removed once the outputs are written"


@pytest.mark.pipeline
def test_killed_reference_training_resumes_to_the_uninterrupted_result(test_profile_run, tmp_path):
    """Minibatch training: the resumed run also continues the shuffling order."""
    results = _published(test_profile_run)
    _run(_reference_command(results, tmp_path / "uninterrupted", tmp_path / "unused"))
    checkpoints = tmp_path / "checkpoints"
    log = _interrupt_then_resume(_reference_command(results, tmp_path / "resumed", checkpoints), checkpoints,
                                 signal.SIGTERM)
    assert 0 < resumed_after_epoch(log, "reference", REF_EPOCHS) < REF_EPOCHS
    assert_same_parameters(tmp_path / "resumed" / "reference.reference_model.h5",
                            tmp_path / "uninterrupted" / "reference.reference_model.h5")


def test_checkpoint_key_follows_input_bytes_and_settings(tmp_path):
    data = tmp_path / "counts.h5ad"
    data.write_bytes(b"one")
    key = ckpt.fingerprint("mapping", [data], {"lr": 0.04})
    assert key == ckpt.fingerprint("mapping", [data], {"lr": 0.04})
    assert key != ckpt.fingerprint("mapping", [data], {"lr": 0.002})
    assert key != ckpt.fingerprint("reference", [data], {"lr": 0.04})
    moved = tmp_path / "retry" / "counts.h5ad"  # a retry stages the same file in another work directory
    moved.parent.mkdir()
    moved.write_bytes(b"one")
    assert key == ckpt.fingerprint("mapping", [moved], {"lr": 0.04})
    data.write_bytes(b"two")
    assert key != ckpt.fingerprint("mapping", [data], {"lr": 0.04})


def test_checkpoint_location(tmp_path, monkeypatch, caplog):
    data = tmp_path / "x.csv"
    data.write_text("x")
    assert ckpt.checkpoint_for(None, 100, "mapping", [data], {}) is None
    assert ckpt.checkpoint_for(str(tmp_path), 0, "mapping", [data], {}) is None
    local = ckpt.checkpoint_for(str(tmp_path / "ck"), 100, "mapping", [data], {})
    assert local.path.parent.parent == tmp_path / "ck" and local.path.parent.name.startswith("mapping-")
    monkeypatch.setattr(ckpt, "FUSION_ROOT", tmp_path / "fusion")
    assert ckpt.checkpoint_for("s3://bucket/work/checkpoints", 100, "mapping", [data], {}) is None
    assert "Checkpoints are off" in caplog.text
    (tmp_path / "fusion" / "s3").mkdir(parents=True)
    fused = ckpt.checkpoint_for("s3://bucket/work/checkpoints", 100, "mapping", [data], {})
    assert fused.path.parent.parent == tmp_path / "fusion" / "s3" / "bucket" / "work" / "checkpoints"
    monkeypatch.setattr(ckpt, "GCSFUSE_ROOT", tmp_path / "disks")
    assert ckpt.checkpoint_for("gs://bucket/work/checkpoints", 100, "mapping", [data], {}) is None
    (tmp_path / "disks" / "bucket").mkdir(parents=True)
    mounted = ckpt.checkpoint_for("gs://bucket/work/checkpoints", 100, "mapping", [data], {})
    assert mounted.path.parent.parent == tmp_path / "disks" / "bucket" / "work" / "checkpoints"


def test_signal_handler_is_restored_after_training():
    before = signal.getsignal(signal.SIGTERM)
    from cell2location_nf.inference.svi import sigterm_flag

    with sigterm_flag(True) as flag:
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.01)
        assert flag == [True]
    assert signal.getsignal(signal.SIGTERM) == before
