"""GPU scheduling is scoped to the GPU-capable steps: the resolved config, and the exact container command
line of every task in stub runs under Docker and Singularity (stand-in engines, tests/nextflow/fake_engines)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from .pipeline_runs import ROOT, nextflow, nextflow_cli

pytestmark = pytest.mark.pipeline

FAKE_ENGINES = ROOT / "tests" / "nextflow" / "fake_engines"
SHOW_ACCELERATOR = ROOT / "tests" / "nextflow" / "show_accelerator.config"
GPU_STEPS = {"CELL2LOCATION_TRAINREFERENCE", "CELL2LOCATION_MAP"}
CPU_IMAGE = "ghcr.io/cell2location-nf/cell2location-nf:0.1.0"
GPU_IMAGE = "ghcr.io/cell2location-nf/cell2location-nf:0.1.0-cuda"


def flat_config(profile: str, cwd: Path, site_config: Path | None = None) -> dict[str, str]:
    extra = ["-c", str(site_config)] if site_config else []
    result = nextflow_cli([*extra, "config", "-flat", "-profile", profile, str(ROOT)], cwd)
    assert result.returncode == 0, result.stdout + result.stderr
    return dict(line.split(" = ", 1) for line in result.stdout.splitlines() if " = " in line)


def test_resolved_config_puts_accelerator_and_container_options_on_the_gpu_label_only(tmp_path):
    """They are closures of params (so -c files count), evaluated per task: the stub runs below check values."""
    for profile in ("docker,gpu", "docker", "singularity,gpu"):
        config = flat_config(profile, tmp_path)
        scoped = {k for k in config if re.search(r"(accelerator|containerOptions|ext\.use_gpu)$", k)}
        assert scoped == {f"process.'withLabel:process_gpu'.{k}" for k in ("accelerator", "containerOptions",
                                                                         "ext.use_gpu")}, profile
        assert not any("--gpus" in v or "--nv" in v for k, v in config.items() if k.endswith("runOptions")), (
            "no global GPU flag")
    assert flat_config("docker,gpu", tmp_path)["params.use_gpu"] == "true"
    assert flat_config("docker", tmp_path)["params.use_gpu"] == "false"


EXAMPLES = {
    "slurm_gpu": {"process.executor": "'slurm'", "process.'withLabel:process_gpu'.clusterOptions": "'--gres=gpu:1'",
                  "process.'withLabel:process_gpu'.queue": "'gpu'", "params.use_gpu": "true"},
    "awsbatch": {"process.executor": "'awsbatch'", "process.'withLabel:process_gpu'.queue": "'YOUR_GPU_QUEUE'",
                 "params.use_gpu": "true", "params.checkpoint_dir": "'/mnt/efs/cell2location-nf/checkpoints'",
                 "aws.batch.volumes": "'/mnt/efs'"},
    "google_batch": {"process.executor": "'google-batch'", "params.gpu_type": "'nvidia-l4'",
                     "process.'withLabel:process_gpu'.machineType": "'g2-standard-8'", "params.use_gpu": "true"},
}


@pytest.mark.parametrize("example", list(EXAMPLES))
def test_example_site_configs_resolve(tmp_path, example):
    """conf/examples: GPU requests stay on the GPU label there too (SLURM through --gres, which it honours)."""
    config = flat_config("docker", tmp_path, ROOT / "conf" / "examples" / f"{example}.config")
    assert {k: config.get(k) for k in EXAMPLES[example]} == EXAMPLES[example]
    gpu_keys = {k for k in config if re.search(r"(accelerator|containerOptions|clusterOptions|machineType)$", k)}
    assert all(k.startswith("process.'withLabel:process_gpu'.") for k in gpu_keys), gpu_keys


def task_launches(workdir: Path) -> dict[str, list[tuple[str, str]]]:
    """Process name (without workflow path) -> (container launch line, resolved accelerator) of each task."""
    launches: dict[str, list[tuple[str, str]]] = {}
    for run in (workdir / "work").glob("*/*/.command.run"):
        text = run.read_text()
        name = re.search(r"^### name: '([^']+)'", text, re.M).group(1).split(" (")[0].split(":")[-1]
        launch = next(line for line in text.splitlines() if re.search(r"(docker run|singularity exec) ", line))
        accelerator = re.search(r"# resolved accelerator: (.+)$", text, re.M).group(1)
        launches.setdefault(name, []).append((launch, accelerator))
    return launches


@pytest.fixture(scope="module")
def params_in_a_config_file(tmp_path_factory) -> Path:
    """GPU switched on by an institutional-style -c file, as conf/examples/google_batch.config does."""
    path = tmp_path_factory.mktemp("config") / "site.config"
    path.write_text("params {\n    use_gpu  = true\n    gpu_type = 'nvidia-l4'\n}\n")
    return path


CASES = {
    "docker-gpu-profile": ("docker", ["-profile", "test,docker,gpu"], "--gpus all", "1 null",
                           (CPU_IMAGE, GPU_IMAGE)),
    "docker-use_gpu-mirror": ("docker", ["-profile", "test,docker", "--use_gpu", "--container_cpu",
                                         "mirror.example.org/c2l:cpu", "--container_gpu",
                                         "mirror.example.org/c2l:cuda"], "--gpus all", "1 null",
                              ("mirror.example.org/c2l:cpu", "mirror.example.org/c2l:cuda")),
    "docker-config-file-gpu_type": ("docker", ["-profile", "test,docker", "-c", "SITE_CONFIG"], "--gpus all",
                                    "1 nvidia-l4", (CPU_IMAGE, GPU_IMAGE)),
    "singularity-gpu-profile": ("singularity", ["-profile", "test,singularity,gpu"], "--nv", "1 null",
                                ("cell2location-nf-0.1.0.img", "cell2location-nf-0.1.0-cuda.img")),
    "docker-no-gpu": ("docker", ["-profile", "test,docker"], None, None, (CPU_IMAGE, CPU_IMAGE)),
}


@pytest.mark.parametrize("case", list(CASES))
def test_gpu_steps_get_accelerator_gpu_flag_and_cuda_image_every_other_step_the_cpu_image(
        tmp_path, params_in_a_config_file, case):
    engine, args, gpu_flag, accelerator, (cpu_image, gpu_image) = CASES[case]
    args = [str(params_in_a_config_file) if a == "SITE_CONFIG" else a for a in args]
    result = nextflow([*args, "-c", str(SHOW_ACCELERATOR), "-stub-run", "--outdir", "results"], tmp_path,
                      path_first=(FAKE_ENGINES,))
    assert result.returncode == 0, result.stdout + result.stderr
    launches = task_launches(tmp_path)
    assert {"CELL2LOCATION_VALIDATE", "CELL2LOCATION_PREPARESPATIAL", "MULTIQC", *GPU_STEPS} <= set(launches)
    for name, tasks in launches.items():
        on_gpu = name in GPU_STEPS and gpu_flag is not None
        for line, resolved in tasks:
            assert engine in line
            image = next(word for word in line.split() if word.endswith((cpu_image, gpu_image)))
            assert image.endswith(gpu_image if on_gpu else cpu_image), (name, line)
            options = line.split(image)[0]
            assert ("--gpus" in options or "--nv" in options) == on_gpu, (name, line)
            assert resolved == (accelerator if on_gpu else "none"), (name, resolved)
            if on_gpu:
                assert gpu_flag in options, (name, line)
