"""Scale benchmark: a Visium-HD-sized synthetic slide mapped with minibatches on a small machine.

    .venv/bin/python bench/run_scale.py                                   # 200,000 x 5,000 x 30, batch 5,000
    .venv/bin/python bench/run_scale.py --locations 50000 --batch-sizes 2500 10000

Data: cell2location_nf.simulate.hd_scale (generated chunk by chunk; true expected profiles as signatures).
Each run maps with ``--batch-size`` locations per step, analytic quantiles (``--use-quantiles``) and the
per-type expression export, and reports wall time (training plus export), peak RSS of the process tree and
accuracy against the true cells per bin. Runs at several batch sizes and data sizes show what the memory
grows with. The per-type expression file (4.7 GB for 200,000 bins) is deleted once its size is recorded, unless
``--keep-expression``: a few runs' copies filled the disk of a machine that also runs CI.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd

from cell2location_nf.benchmark.metrics import score
from cell2location_nf.simulate.hd_scale import HDScaleConfig, make_hd_scale_data

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run_benchmark import OURS, markdown_table, run_measured  # noqa: E402

HERE = Path(__file__).resolve().parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, default=HERE / "work")
    parser.add_argument("--locations", type=int, default=200_000)
    parser.add_argument("--n-genes", type=int, default=5000)
    parser.add_argument("--n-types", type=int, default=30)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[5000])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--our-args", default="", help="Extra options for map-spatial.")
    parser.add_argument("--label", default="", help="Suffix naming this configuration (with --our-args).")
    parser.add_argument("--keep-expression", action="store_true",
                        help="Keep hd.expression_per_cell_type.h5ad (deleted after the run by default).")
    args = parser.parse_args()

    cfg = HDScaleConfig(n_locations=args.locations, n_genes=args.n_genes, n_types=args.n_types)
    data = args.workdir / f"hd_{cfg.n_locations}x{cfg.n_genes}x{cfg.n_types}"
    if not (data / "hd.h5ad").exists():
        print(f"generating {data.name} ...", file=sys.stderr, flush=True)
        make_hd_scale_data(data, cfg)
    truth = pd.read_csv(data / "truth.csv", index_col=0)
    truth.index = "hd_" + truth.index  # map-spatial names locations <sample>_<barcode>
    results = []
    for batch_size in args.batch_sizes:
        out = data / f"ours{args.label}_batch{batch_size}_epochs{args.epochs}"
        cmd = [*OURS, "map-spatial", "--signatures", str(data / "signatures.csv"), "--n-cells-per-location",
               str(cfg.cells_per_bin), "--batch-size", str(batch_size), "--max-epochs", str(args.epochs),
               "--use-quantiles", "--per-type-expression", "--device", "cpu", "--outdir", str(out),
               *args.our_args.split(), str(data / "hd.h5ad")]
        out.mkdir(parents=True, exist_ok=True)
        print(f"running {out.name} ...", file=sys.stderr, flush=True)
        cost = run_measured(cmd, out / "log.txt", args.threads)
        estimates = {kind: pd.read_csv(out / f"hd.cell_abundance_{kind}.csv", index_col=0) for kind in ("q50", "q05")}
        for table in estimates.values():
            table.index = "hd_" + table.pop("barcode").astype(str)
        mapped = truth.loc[estimates["q50"].index]  # bins without counts are dropped before mapping
        metrics = score(mapped, estimates["q50"], estimates["q05"])
        expression = out / "hd.expression_per_cell_type.h5ad"
        cost["per_type_expression_bytes"] = expression.stat().st_size
        if not args.keep_expression:
            expression.unlink()
        results.append({"locations": cfg.n_locations, "genes": cfg.n_genes, "types": cfg.n_types,
                        "label": args.label, "our_args": args.our_args, "mapped": len(mapped),
                        "batch_size": batch_size, "epochs": args.epochs, "threads": args.threads,
                        **cost, **metrics})
        print(json.dumps(results[-1]), flush=True)
    table = pd.DataFrame(results)
    (data / f"results{args.label}_batch{'-'.join(map(str, args.batch_sizes))}_epochs{args.epochs}.json").write_text(
        table.to_json(orient="records", indent=2))
    print(markdown_table(table.drop(columns="peak_rss_where")))  # in the JSON: long for a table


if __name__ == "__main__":
    main()
