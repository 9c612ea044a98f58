#!/usr/bin/env bash
# Wheels for running our side of the benchmark on a lent GPU machine (the workplace's device tool).
#
# That machine cannot download anything, and its image (CPython 3.12, torch with CUDA) lacks the packages
# below or holds another version (pandas 3, which anndata 0.12 cannot write .h5ad files with). This puts
# them, at the versions containers/requirements.lock pins, into .whl/ (git-ignored), which a device call
# carries; bench/device_target4.sh installs them there. Checks that every requirement of each wheel is
# either in the kit or among the image's packages (DEVICE_HAS, as the device notes list them), so a
# missing one shows up here, not on the GPU's clock.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=python3
[ -x .venv/bin/python ] && PYTHON=.venv/bin/python  # make setup's, which has packaging

KIT=(anndata array-api-compat donfig google-crc32c legacy-api-wrap natsort numcodecs pandas pyro-api pyro-ppl
     pynndescent pytz scanpy scverse-misc session-info2 tzdata umap-learn zarr)
DEVICE_HAS="click h5py joblib matplotlib networkx numba numpy opt-einsum packaging patsy pillow psutil pyarrow
     python-dateutil pyyaml rich scikit-learn scipy seaborn statsmodels torch tqdm typing-extensions threadpoolctl
     fsspec cloudpickle llvmlite"

pins=()
for name in "${KIT[@]}"; do
    line=$(grep -E "^${name}==" containers/requirements.lock) ||
        { echo "device_wheels: ${name} is not pinned in containers/requirements.lock" >&2; exit 1; }
    pins+=("${line%% *}")
done

rm -rf .whl
mkdir -p .whl
platforms=()
for tag in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 \
           manylinux1_x86_64; do
    platforms+=(--platform "$tag")
done
"$PYTHON" -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp "${platforms[@]}" -d .whl "${pins[@]}"

"$PYTHON" - "$DEVICE_HAS" <<'EOF'
"""Every unconditional requirement (Python 3.12, Linux) of a kit wheel is in the kit or on the device."""
import sys
import zipfile
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

environment = {**default_environment(), "python_version": "3.12", "python_full_version": "3.12.3",
               "sys_platform": "linux", "platform_system": "Linux", "extra": ""}
device = {canonicalize_name(n) for n in sys.argv[1].split()}
wheels = sorted(Path(".whl").glob("*.whl"))
kit = {canonicalize_name(w.name.split("-")[0]) for w in wheels}
missing = []
for wheel in wheels:
    with zipfile.ZipFile(wheel) as z:
        metadata = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        lines = z.read(metadata).decode().splitlines()
    for line in lines:
        if not line.startswith("Requires-Dist:"):
            continue
        req = Requirement(line.split(":", 1)[1].strip())
        if req.marker is not None and not req.marker.evaluate(environment):
            continue
        if canonicalize_name(req.name) not in kit | device:
            missing.append(f"{wheel.name} needs {req}")
if missing:
    sys.exit("device_wheels: not in the kit nor on the device:\n  " + "\n  ".join(missing))
size = sum(w.stat().st_size for w in wheels) / 2**20
print(f"device_wheels: {len(wheels)} wheels, {size:.1f} MiB in .whl/ (a device call carries at most 64 MiB)")
EOF
