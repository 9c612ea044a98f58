#!/usr/bin/env bash
# Issue 5's target 4 on a lent GPU machine, in one device call: map 4,000 spots x 10,000 genes x 34 types
# with our tool on CUDA, training plus export, and bring the figures back.
#
# Run here first: bash bench/device_wheels.sh
# Then, through the device tool (run), carrying .whl (and bench/work/4000x10000x34 to reuse its data):
#   bash bench/device_target4.sh
# Extra arguments go to bench/run_benchmark.py (say --epochs 100 for a quick check). Results (table,
# result.json, logs) land in $OUT, or bench/device_out when OUT is unset. A first argument --profile-step
# also times one training step per objective implementation afterwards (bench/profile_step.py, 300 steps
# on the same data), among them the loss read after every step against every 50 steps.
set -euo pipefail
profile=0
if [ "${1:-}" = --profile-step ]; then profile=1; shift; fi
cd "$(dirname "$0")/.."
out=${OUT:-bench/device_out}
mkdir -p "$out"

python=${PYTHON:-python3}
if [ -d .whl ]; then
    "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
else
    echo "device_target4: no .whl/ (bench/device_wheels.sh makes it); using $python's own packages" >&2
fi
export PYTHONPATH="${PYTHONPATH:+$PYTHONPATH:}$PWD/src" PYTHONUNBUFFERED=1
"$python" -c 'import anndata, pandas, pyro, torch; print("torch", torch.__version__, "cuda", torch.cuda.is_available(),
            "pandas", pandas.__version__, "anndata", anndata.__version__, "pyro", pyro.__version__)'
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader > "$out/gpu.txt" 2>&1 || true
cat "$out/gpu.txt"

status=0
"$python" bench/run_benchmark.py --grid 40 50 --n-genes 10000 --n-types 34 --seeds 0 --threads 4 --device cuda \
    --tools ours "$@" 2>&1 | tee "$out/target4.txt" || status=$?
# the newest run, in bench/work or in a --workdir below it (bench/work/dev, as bench/RESULTS.md's GPU runs)
run=$(ls -td bench/work/4000x10000x34/ours*seed* bench/work/*/4000x10000x34/ours*seed* 2>/dev/null | head -n 1 || true)
for f in "$run/result.json" "$run/log.txt" "$run/mapping.training_summary.json" "$(dirname "$run")/signatures/log.txt"; do
    [ -f "$f" ] && cp "$f" "$out/$(basename "$(dirname "$f")")_$(basename "$f")"
done
if [ "$profile" = 1 ]; then
    workdir=bench/work
    args=("$@")
    for i in "${!args[@]}"; do [ "${args[$i]}" = --workdir ] && workdir=${args[$((i + 1))]}; done
    "$python" bench/profile_step.py --workdir "$workdir" --dataset 4000x10000x34 --device cuda --threads 4 \
        --steps 300 2>&1 | tee "$out/profile_step.txt" || status=$?
fi
exit "$status"
