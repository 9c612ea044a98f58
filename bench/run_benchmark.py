"""Side-by-side mapping benchmark: our cell2location vs upstream cell2location 0.1.5 on the same data.

    .venv/bin/python bench/run_benchmark.py --seeds 0 1                 # ours (defaults) and upstream (defaults)
    .venv/bin/python bench/run_benchmark.py --grid 25 40 --n-genes 3000 --n-types 20 --tools ours
    .venv/bin/python bench/run_benchmark.py --tools ours --label _upstream_schedule --our-args="--schedule upstream"

Data: cell2location_nf.simulate.benchmark_data (spots summed from held-out reference cells). Both tools map
with the same signatures (our stage 1 on the reference half), the same N and detection_alpha, on the same
machine with the same thread count, each at its own defaults unless told otherwise (ours: the 'fast'
schedule; upstream: 30,000 full-batch epochs). Prints wall time (training plus export, process start to
exit), peak RSS and accuracy metrics (cell2location_nf.benchmark.metrics) per tool and seed, the
upstream/ours wall-time ratio per seed, and writes them as JSON next to the data.

Each run leaves ``result.json`` in its folder; an upstream run whose folder already holds one for the same
seed, epochs and threads is reused (upstream's output does not depend on our code; a 30,000-epoch run
takes over an hour here) unless ``--rerun-upstream`` is given. Reused rows are marked in the table.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import psutil

from cell2location_nf.benchmark.metrics import score
from cell2location_nf.simulate.benchmark_data import BenchmarkConfig, make_benchmark_data

HERE = Path(__file__).resolve().parent
UPSTREAM_PYTHON = HERE / ".venv-upstream" / "bin" / "python"
OURS = [sys.executable, "-m", "cell2location_nf"]


def available_tools(tools: list[str]) -> list[str]:
    """``tools`` without upstream when its environment is absent (the benchmark then runs ours only)."""
    if "upstream" in tools and not UPSTREAM_PYTHON.exists():
        print("upstream environment missing (bash bench/setup_upstream.sh); running ours only", file=sys.stderr)
        return [t for t in tools if t != "upstream"]
    return tools


def run_measured(cmd: list[str], log_path: Path, threads: int) -> dict[str, float]:
    """Run a command, sampling the peak RSS of its whole process tree; returns wall seconds and peak MiB."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), PYTHONUNBUFFERED="1")
    start, peak = time.perf_counter(), 0
    with log_path.open("w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
        root = psutil.Process(proc.pid)
        while proc.poll() is None:
            try:
                rss = sum(p.memory_info().rss for p in [root, *root.children(recursive=True)])
                peak = max(peak, rss)
            except psutil.Error:
                pass
            time.sleep(0.5)
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd[:4]} failed (exit {proc.returncode}); see {log_path}")
    return {"wall_s": round(time.perf_counter() - start, 1), "peak_rss_mib": round(peak / 2**20, 1)}


def read_estimates(folder: Path, samples: list[str], kind: str, ours: bool) -> pd.DataFrame:
    tables = []
    for sample in samples:
        table = pd.read_csv(folder / f"{sample}.cell_abundance_{kind}.csv", index_col=0)
        if ours:
            table = table.set_index("barcode")
        tables.append(table)
    return pd.concat(tables)


def markdown_table(table: pd.DataFrame) -> str:
    def cell(value) -> str:
        return f"{value:.4g}" if isinstance(value, float) else str(value)

    lines = ["| " + " | ".join(table.columns) + " |", "|" + "---|" * len(table.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in table.itertuples(index=False)]
    return "\n".join(lines)


def run_tool(tool: str, cmd: list[str], out: Path, seed: int, threads: int, reuse: bool) -> dict:
    """Run one tool once (or reuse its earlier result.json) and return its row."""
    saved = out / "result.json"
    if reuse and saved.exists():
        row = json.loads(saved.read_text())
        if row.get("threads") == threads:
            return {**row, "reused": True}
    out.mkdir(parents=True, exist_ok=True)
    print(f"running {out.name} ...", file=sys.stderr, flush=True)
    cost = run_measured(cmd, out / "log.txt", threads)
    row = {"tool": tool, "seed": seed, "threads": threads, **cost, "date": time.strftime("%Y-%m-%d %H:%M"),
           "command": " ".join(cmd)}
    saved.write_text(json.dumps(row, indent=2))
    return {**row, "reused": False}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, default=HERE / "work")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--tools", nargs="+", default=["ours", "upstream"], choices=["ours", "upstream"])
    parser.add_argument("--epochs", type=int, default=None, help="Override our mapping epochs (default: our schedule).")
    parser.add_argument("--upstream-epochs", type=int, default=30000, help="Upstream mapping epochs (its default).")
    parser.add_argument("--our-args", default="", help="Extra options for our map-spatial (e.g. --schedule upstream).")
    parser.add_argument("--label", default="", help="Suffix naming this configuration of our tool (with --our-args).")
    parser.add_argument("--n-genes", type=int, default=1000)
    parser.add_argument("--n-types", type=int, default=12)
    parser.add_argument("--grid", type=int, nargs=2, default=[20, 20], help="Spots per sample (rows cols).")
    parser.add_argument("--samples", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--num-samples", type=int, default=1000)
    parser.add_argument("--rerun-upstream", action="store_true", help="Run upstream even if a result exists.")
    args = parser.parse_args()

    cfg = BenchmarkConfig(n_genes=args.n_genes, n_types=args.n_types, grid=tuple(args.grid), n_samples=args.samples)
    name = f"{cfg.grid[0] * cfg.grid[1] * cfg.n_samples}x{cfg.n_genes}x{cfg.n_types}"
    data = args.workdir / name
    if not (data / "reference.h5ad").exists():
        make_benchmark_data(data, cfg)
    samples = [f"sample_{s + 1}" for s in range(cfg.n_samples)]
    spatial = [str(data / f"{s}.h5ad") for s in samples]
    truth = pd.concat([pd.read_csv(data / "truth" / f"{s}.csv", index_col=0) for s in samples])
    n_cells = round(float(truth.sum(axis=1).mean()), 1)
    signatures = data / "signatures" / "reference.signatures.csv"
    if not signatures.exists():
        (data / "signatures").mkdir(exist_ok=True)
        run_measured([*OURS, "train-reference", "--reference", str(data / "reference.h5ad"), "--batch-key", "batch",
                      "--outdir", str(data / "signatures")], data / "signatures" / "log.txt", args.threads)
    args.tools = available_tools(args.tools)
    results = []
    for seed in args.seeds:
        for tool in args.tools:
            common = ["--signatures", str(signatures), "--n-cells-per-location", str(n_cells),
                      "--num-samples", str(args.num_samples), "--seed", str(seed)]
            if tool == "ours":
                name_ = f"ours{args.label}"
                epochs = ["--max-epochs", str(args.epochs)] if args.epochs else []
                out = data / (f"{name_}_seed{seed}" + (f"_epochs{args.epochs}" if args.epochs else ""))
                cmd = [*OURS, "map-spatial", *common, *epochs, "--outdir", str(out), "--device", "cpu",
                       *args.our_args.split(), *spatial]
            else:
                name_ = "upstream"
                out = data / f"upstream_seed{seed}_epochs{args.upstream_epochs}"
                cmd = [str(UPSTREAM_PYTHON), str(HERE / "upstream_map.py"), *common, "--max-epochs",
                       str(args.upstream_epochs), "--outdir", str(out), *spatial]
            row = run_tool(name_, cmd, out, seed, args.threads, reuse=tool == "upstream" and not args.rerun_upstream)
            row["epochs"] = _epochs_run(out) if tool == "ours" else args.upstream_epochs
            metrics = score(truth, read_estimates(out, samples, "means", tool == "ours"),
                            read_estimates(out, samples, "q05", tool == "ours"))
            results.append({**row, **metrics})
            print(json.dumps(results[-1]), flush=True)
    table = pd.DataFrame(results)
    upstream = table[table["tool"] == "upstream"].set_index("seed")["wall_s"]
    table["speed-up"] = [upstream.get(r.seed, float("nan")) / r.wall_s if r.tool != "upstream" else 1.0
                         for r in table.itertuples()]
    tag = f"{'-'.join(args.tools)}{args.label}_seeds{'-'.join(map(str, args.seeds))}" + (
        f"_epochs{args.epochs}" if args.epochs else "")
    (data / f"results_{tag}.json").write_text(table.to_json(orient="records", indent=2))
    print(f"\nDataset {name} (spots x genes x types), N = {n_cells}, threads = {args.threads}\n")
    columns = ["tool", "seed", "epochs", "reused", "wall_s", "speed-up", "peak_rss_mib", *metrics]
    print(markdown_table(table[columns]))


def _epochs_run(out: Path) -> int:
    """Epochs our run actually trained (from its training summary)."""
    summary = next(out.glob("*.training_summary.json"), None)
    return json.loads(summary.read_text())["epochs"] if summary else -1


if __name__ == "__main__":
    main()
