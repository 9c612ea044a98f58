"""The images and CI install one lock of Python dependencies: it pins every dependency of pyproject.toml,
this test environment is exactly that lock, and the CPU image's variant changes only torch's build."""

from __future__ import annotations

import importlib.metadata
import re
import subprocess
import tomllib

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from .pipeline_runs import ROOT

CONTAINERS = ROOT / "containers"
CUDA_ONLY = re.compile(r"^(nvidia-|cuda-|triton$)")


def pins(lock: str) -> dict[str, str]:
    """Canonical package name -> pinned version, from a lock file's text."""
    found = {}
    for line in lock.splitlines():
        requirement = line.split("#", 1)[0].strip()
        if requirement:
            name, version = requirement.split("==")
            found[canonicalize_name(name)] = version
    return found


def project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def test_lock_pins_every_dependency_within_its_range():
    runtime = pins((CONTAINERS / "requirements.lock").read_text())
    test = pins((CONTAINERS / "requirements-test.lock").read_text())
    for lock, requirements in ((runtime, project()["dependencies"]),
                               (test, project()["optional-dependencies"]["test"])):
        for text in requirements:
            requirement = Requirement(text)
            name = canonicalize_name(requirement.name)
            assert name in lock, f"{name} is not in the lock; run `make lock`"
            assert requirement.specifier.contains(lock[name], prereleases=True), (text, lock[name])
    assert {k: test[k] for k in runtime} == runtime, "the test lock must keep the runtime pins"


def test_this_environment_is_the_lock():
    """CI installs the lock with --no-deps; every pinned package is present at exactly its version."""
    for name, version in pins((CONTAINERS / "requirements-test.lock").read_text()).items():
        assert importlib.metadata.version(name) == version, name


def test_cpu_image_lock_swaps_only_torchs_build():
    lock = (CONTAINERS / "requirements.lock").read_text()
    cpu = subprocess.run([str(CONTAINERS / "cpu" / "cpu-lock.sh")], input=lock, capture_output=True, text=True,
                         check=True).stdout
    runtime, cpu_pins = pins(lock), pins(cpu)
    assert cpu_pins.pop("torch") == runtime["torch"] + "+cpu"
    expected = {k: v for k, v in runtime.items() if k != "torch" and not CUDA_ONLY.match(k)}
    assert cpu_pins == expected
    assert any(CUDA_ONLY.match(k) for k in runtime), "the CUDA build's libraries are in the full lock"


def test_images_install_the_lock_and_need_no_entrypoint():
    for image in ("cpu", "cuda"):
        dockerfile = (CONTAINERS / image / "Dockerfile").read_text()
        assert "containers/requirements.lock" in dockerfile and "--no-deps" in dockerfile
        assert "ENTRYPOINT" not in dockerfile.replace("No ENTRYPOINT", "")
        assert re.search(r"^ENV VIRTUAL_ENV=/opt/cell2location-nf \\\n\s+PATH=/opt/cell2location-nf/bin:\$PATH",
                         dockerfile, re.M)
        for source in re.findall(r"^COPY (?!--from)(.+) \S+$", dockerfile, re.M):
            for path in source.split():
                assert (ROOT / path).exists(), f"{image}/Dockerfile copies missing {path}"
