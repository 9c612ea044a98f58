"""Accuracy along training: score the mapping guide against the truth every few epochs of one schedule.

    .venv/bin/python bench/trace_training.py --every 1000                       # the fast preset, seed 0
    .venv/bin/python bench/trace_training.py --every 2000 --max-epochs 30000 --lr-final 0.002 --scale-lr-factor 0.5
    .venv/bin/python bench/trace_training.py --every 2000 --schedule upstream

Trains on a benchmark set that ``run_benchmark.py`` made (its data and signatures, the same N), in this
process, through the same ``train_mapping`` as ``map-spatial``; schedule options as ``map-spatial``'s.
Every ``--every`` epochs it scores the guide's abundances (the log-normal mean exp(loc + scale²/2) for
Pearson and scale, the analytic q05 for the proportion and presence metrics; no posterior sampling) with
the benchmark metrics, plus how each spot's counts are split between cells and detection
(``count_split``: Pearson of the total cells per spot, and of the composition rescaled to the true
totals) and the mean −ELBO over those epochs. Prints a table and writes it as CSV next to the data.
``--average-from EPOCH`` adds a row scored on the abundance site's loc and raw scale averaged over every
epoch after EPOCH (tail averaging: does the last iterate's noise cost accuracy?).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import torch
from torch.nn.functional import softplus

from cell2location_nf.benchmark.metrics import count_split, score
from cell2location_nf.cli.mapping import load_inputs
from cell2location_nf.models.guide import MeanFieldGuide
from cell2location_nf.stages.mapping import ABUNDANCE_SITE, settings_for_schedule, train_mapping

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run_benchmark import markdown_table, mean_cells_per_spot, read_truth  # noqa: E402

HERE = Path(__file__).resolve().parent


def lognormal_tables(loc: torch.Tensor, scale: torch.Tensor, barcodes: pd.Index,
                     types: pd.Index) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(mean, q05) of LogNormal(loc, scale) abundances, as locations x types tables indexed like the truth."""
    z05 = torch.distributions.Normal(0.0, 1.0).icdf(torch.tensor(0.05, dtype=loc.dtype))
    mean = torch.exp(loc + scale.pow(2) / 2).cpu().numpy()
    q05 = torch.exp(loc + scale * z05).cpu().numpy()
    return (pd.DataFrame(mean, index=barcodes, columns=types), pd.DataFrame(q05, index=barcodes, columns=types))


def abundance_tables(guide: MeanFieldGuide, barcodes: pd.Index, types: pd.Index) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(mean, q05) of w_sf under the guide."""
    return lognormal_tables(guide.locs[ABUNDANCE_SITE].detach(), guide.scale(ABUNDANCE_SITE).detach(), barcodes, types)


class TailAverage:
    """Running mean of the abundance site's loc and raw (softplus-parameterised) scale over the epochs added."""

    def __init__(self) -> None:
        self.loc_sum: torch.Tensor | None = None
        self.raw_sum: torch.Tensor | None = None
        self.count = 0

    def add(self, guide: MeanFieldGuide) -> None:
        loc, raw = guide.locs[ABUNDANCE_SITE].detach(), guide.raw_scales[ABUNDANCE_SITE].detach()
        self.loc_sum = loc.clone() if self.loc_sum is None else self.loc_sum.add_(loc)
        self.raw_sum = raw.clone() if self.raw_sum is None else self.raw_sum.add_(raw)
        self.count += 1

    def mean(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.loc_sum / self.count, softplus(self.raw_sum / self.count)


def load_benchmark_set(data: Path) -> tuple[Path, ad.AnnData, pd.DataFrame, pd.DataFrame]:
    """(signatures file, spatial data, signatures table, truth) of a set ``run_benchmark.py`` made, loaded as
    ``map-spatial`` loads them with the same N; exits with a message when the set is not there."""
    signatures = data / "signatures" / "reference.signatures.csv"
    spatial = sorted(data.glob("sample_*.h5ad"))
    if not signatures.exists() or not spatial:
        sys.exit(f"{data}: no benchmark set with signatures here; run bench/run_benchmark.py for it first.")
    truth = read_truth(data, [p.stem for p in spatial])
    adata, table = load_inputs(str(signatures), tuple(map(str, spatial)), mean_cells_per_spot(truth))
    return signatures, adata, table, truth


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=HERE / "work" / "800x1000x12",
                        help="A benchmark set made by run_benchmark.py (default: its 800-spot set).")
    parser.add_argument("--every", type=int, default=1000, help="Score the guide every this many epochs.")
    parser.add_argument("--schedule", default="fast")
    parser.add_argument("--max-epochs", type=int, default=None)
    parser.add_argument("--lr", type=float, default=None)
    parser.add_argument("--lr-final", type=float, default=None)
    parser.add_argument("--scale-lr-factor", type=float, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--average-from", type=int, nargs="*", default=[],
                        help="Also score the guide averaged over the epochs after each of these.")
    parser.add_argument("--label", default="", help="Suffix of the CSV's name (trace<label>_seed<seed>.csv).")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    signatures, adata, table, truth = load_benchmark_set(args.data)
    settings = settings_for_schedule(args.schedule, adata.n_obs, seed=args.seed, max_epochs=args.max_epochs,
                                     lr=args.lr, lr_final=args.lr_final, scale_lr_factor=args.scale_lr_factor)
    barcodes = pd.Index(adata.obs["barcode"].astype(str))
    rows: list[dict] = []
    tails = {start: TailAverage() for start in args.average_from}

    def record(done: int, guide: MeanFieldGuide) -> None:
        for start, tail in tails.items():
            if done > start:
                tail.add(guide)
        if done % args.every:
            return
        mean, q05 = abundance_tables(guide, barcodes, table.columns)
        rows.append({"epoch": done, **score(truth, mean, q05), **count_split(truth, mean)})
        print(f"epoch {done}: " + ", ".join(f"{k} {v:.4g}" for k, v in rows[-1].items() if k != "epoch"),
              flush=True)

    trained = train_mapping(adata, table, settings, source=str(signatures), on_epoch=record)
    elbo = np.asarray(trained.history.elbo_train)
    for row in rows:
        row["neg_elbo"] = float(elbo[row["epoch"] - args.every:row["epoch"]].mean())
    for start, tail in tails.items():
        loc, scale = tail.mean()
        mean, q05 = lognormal_tables(loc, scale, barcodes, table.columns)
        rows.append({"epoch": f"mean of {start + 1}-{len(elbo)}", **score(truth, mean, q05), **count_split(truth, mean),
                     "neg_elbo": float(elbo[start:].mean())})
    result = pd.DataFrame(rows)
    out = args.data / f"trace{args.label}_seed{args.seed}.csv"
    result.to_csv(out, index=False)
    print(f"\n{args.data.name}, schedule {settings.schedule}: lr {settings.lr} -> {settings.lr_final}, scales x "
          f"{settings.scale_lr_factor}, {settings.max_epochs} epochs, seed {args.seed} ({out.name})\n")
    print(markdown_table(result))


if __name__ == "__main__":
    main()
