"""GPU scheduling is scoped to the GPU-capable steps: the resolved config, and the exact container command
line of every task in stub runs under Docker and Singularity (stand-in engines, tests/nextflow/fake_engines)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from .pipeline_runs import ROOT, nextflow, nextflow_cli

pytestmark = pytest.mark.pipeline

FAKE_ENGINES = ROOT / "tests" / "nextflow" / "fake_engines"
GPU_STEPS = {"CELL2LOCATION_TRAINREFERENCE", "CELL2LOCATION_MAP"}
CPU_IMAGE = "ghcr.io/cell2location-nf/cell2location-nf:0.1.0"
GPU_IMAGE = "ghcr.io/cell2location-nf/cell2location-nf:0.1.0-cuda"


def flat_config(profile: str, cwd: Path) -> dict[str, str]:
    result = nextflow_cli(["config", "-flat", "-profile", profile, str(ROOT)], cwd)
    assert result.returncode == 0, result.stdout + result.stderr
    return dict(line.split(" = ", 1) for line in result.stdout.splitlines() if " = " in line)


def test_resolved_config_puts_accelerator_and_container_options_on_the_gpu_label_only(tmp_path):
    gpu = flat_config("docker,gpu", tmp_path)
    scoped = {k: v for k, v in gpu.items() if re.search(r"\.(accelerator|containerOptions|ext\.use_gpu)$", k)}
    assert set(scoped) == {f"process.'withLabel:process_gpu'.{k}" for k in ("accelerator", "containerOptions",
                                                                          "ext.use_gpu")}
    assert scoped["process.'withLabel:process_gpu'.accelerator"] == "1"
    assert scoped["process.'withLabel:process_gpu'.ext.use_gpu"] == "true"
    assert "docker.runOptions" in gpu and "--gpus" not in gpu["docker.runOptions"], "no global GPU flag"
    cpu = flat_config("docker", tmp_path)
    assert cpu["process.'withLabel:process_gpu'.accelerator"] == "null"
    assert cpu["process.'withLabel:process_gpu'.ext.use_gpu"] == "false"


def task_launches(workdir: Path) -> dict[str, list[str]]:
    """Process name (without the workflow path) -> the container launch line of each of its tasks."""
    launches: dict[str, list[str]] = {}
    for run in (workdir / "work").glob("*/*/.command.run"):
        text = run.read_text()
        name = re.search(r"^### name: '([^']+)'", text, re.M).group(1).split(" (")[0].split(":")[-1]
        launch = next(line for line in text.splitlines() if re.search(r"(docker run|singularity exec) ", line))
        launches.setdefault(name, []).append(launch)
    return launches


@pytest.mark.parametrize(("engine", "args", "gpu_flag", "images"), [
    ("docker", ["-profile", "test,docker,gpu"], "--gpus all", (CPU_IMAGE, GPU_IMAGE)),
    ("docker", ["-profile", "test,docker", "--use_gpu", "--container_cpu", "mirror.example.org/c2l:cpu",
                "--container_gpu", "mirror.example.org/c2l:cuda"], "--gpus all",
     ("mirror.example.org/c2l:cpu", "mirror.example.org/c2l:cuda")),
    ("singularity", ["-profile", "test,singularity,gpu"], "--nv",
     ("cell2location-nf-0.1.0.img", "cell2location-nf-0.1.0-cuda.img")),  # pulled into work/singularity
    ("docker", ["-profile", "test,docker"], None, (CPU_IMAGE, CPU_IMAGE)),
], ids=["docker-gpu-profile", "docker-use_gpu-mirror", "singularity-gpu-profile", "docker-no-gpu"])
def test_gpu_steps_get_the_gpu_flag_and_cuda_image_every_other_step_the_cpu_image(tmp_path, engine, args,
                                                                                  gpu_flag, images):
    result = nextflow([*args, "-stub-run", "--outdir", "results"], tmp_path, path_first=(FAKE_ENGINES,))
    assert result.returncode == 0, result.stdout + result.stderr
    launches = task_launches(tmp_path)
    assert {"CELL2LOCATION_VALIDATE", "CELL2LOCATION_PREPARESPATIAL", "MULTIQC", *GPU_STEPS} <= set(launches)
    cpu_image, gpu_image = images
    for name, lines in launches.items():
        on_gpu = name in GPU_STEPS and gpu_flag is not None
        for line in lines:
            assert engine in line
            image = next(word for word in line.split() if word.endswith((cpu_image, gpu_image)))
            assert image.endswith(gpu_image if on_gpu else cpu_image), (name, line)
            options = line.split(image)[0]
            assert ("--gpus" in options or "--nv" in options) == on_gpu, (name, line)
            if on_gpu:
                assert gpu_flag in options, (name, line)
