"""Side-by-side reference-signature benchmark: our stage 1 vs upstream cell2location 0.1.5's RegressionModel.

    .venv/bin/python bench/run_reference_benchmark.py --seeds 0 1              # >= 10,000 cells x 3,000 genes

Data: the reference half of cell2location_nf.simulate.benchmark_data (NB counts, 20 types, two batches),
gene-filtered once by our prepare-reference (not timed); both tools train on that same file with the
tutorial's settings unless told otherwise (250 epochs, batch size 2500, lr 0.002, 1,000 posterior samples).
Prints wall time (training plus export, process start to exit), peak RSS and signature accuracy against
the true profiles (cell2location_nf.benchmark.metrics.signature_score) per tool and seed, and the
upstream/ours wall-time ratio per seed. Upstream results are reused as in run_benchmark.py.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd
from run_benchmark import HERE, OURS, UPSTREAM_PYTHON, available_tools, markdown_table, run_measured, run_tool

from cell2location_nf.benchmark.metrics import signature_score
from cell2location_nf.simulate.benchmark_data import BenchmarkConfig, make_benchmark_data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, default=HERE / "work")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--tools", nargs="+", default=["ours", "upstream"], choices=["ours", "upstream"])
    parser.add_argument("--n-cells", type=int, default=10000, help="Reference cells (split evenly over types).")
    parser.add_argument("--n-genes", type=int, default=3000)
    parser.add_argument("--n-types", type=int, default=20)
    parser.add_argument("--epochs", type=int, default=250, help="Training epochs of both tools (tutorial: 250).")
    parser.add_argument("--our-args", default="", help="Extra options for our train-reference.")
    parser.add_argument("--label", default="", help="Suffix naming this configuration of our tool.")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--num-samples", type=int, default=1000)
    parser.add_argument("--rerun-upstream", action="store_true")
    args = parser.parse_args()

    cfg = BenchmarkConfig(n_genes=args.n_genes, n_types=args.n_types,
                          cells_per_type=2 * args.n_cells // args.n_types, grid=(10, 10), n_samples=1)
    name = f"reference_{args.n_cells}x{args.n_genes}x{args.n_types}"
    data = args.workdir / name
    if not (data / "truth" / "profiles.csv").exists():
        make_benchmark_data(data, cfg)
    prepared = data / "reference.prepared.h5ad"
    if not prepared.exists():
        run_measured([*OURS, "prepare-reference", "--reference", str(data / "reference.h5ad"), "--batch-key",
                      "batch", "--output", str(prepared), "--plot", str(data / "gene_filter.png")],
                     data / "prepare_log.txt", args.threads)
    truth = pd.read_csv(data / "truth" / "profiles.csv", index_col=0)
    args.tools = available_tools(args.tools)
    results = []
    for seed in args.seeds:
        for tool in args.tools:
            common = ["--reference", str(prepared), "--max-epochs", str(args.epochs), "--num-samples",
                      str(args.num_samples), "--seed", str(seed)]
            if tool == "ours":
                name_ = f"ours{args.label}"
                out = data / f"{name_}_seed{seed}_epochs{args.epochs}"
                cmd = [*OURS, "train-reference", *common, "--outdir", str(out), "--device", "cpu",
                       *args.our_args.split()]
                signatures = out / "reference.signatures.csv"
            else:
                name_ = "upstream"
                out = data / f"upstream_seed{seed}_epochs{args.epochs}"
                cmd = [str(UPSTREAM_PYTHON), str(HERE / "upstream_reference.py"), *common, "--outdir", str(out)]
                signatures = out / "signatures.csv"
            row = run_tool(name_, cmd, out, seed, args.threads, reuse=tool == "upstream" and not args.rerun_upstream)
            metrics = signature_score(truth, pd.read_csv(signatures, index_col=0))
            results.append({**row, "epochs": args.epochs, **metrics})
            print(json.dumps(results[-1]), flush=True)
    table = pd.DataFrame(results)
    upstream = table[table["tool"] == "upstream"].set_index("seed")["wall_s"]
    table["speed-up"] = [upstream.get(r.seed, float("nan")) / r.wall_s if r.tool != "upstream" else 1.0
                         for r in table.itertuples()]
    tag = f"{'-'.join(args.tools)}{args.label}_seeds{'-'.join(map(str, args.seeds))}_epochs{args.epochs}"
    (data / f"results_{tag}.json").write_text(table.to_json(orient="records", indent=2))
    print(f"\nDataset {name} (reference cells x genes x types), threads = {args.threads}\n")
    columns = ["tool", "seed", "epochs", "reused", "wall_s", "speed-up", "peak_rss_mib", *metrics]
    print(markdown_table(table[columns]))


if __name__ == "__main__":
    main()
