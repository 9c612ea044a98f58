"""Run upstream cell2location 0.1.5's reference model (run inside bench/.venv-upstream, see setup_upstream.sh).

Same input as ours: the prepared (gene-filtered) reference .h5ad. Tutorial settings: 250 epochs, batch
size 2500, lr 0.002, 1,000 posterior samples. Writes <outdir>/signatures.csv (posterior means, genes x types).
"""

import argparse
import sys
import time
from pathlib import Path

import anndata as ad


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reference", required=True)
    parser.add_argument("--outdir", required=True)
    parser.add_argument("--max-epochs", type=int, default=250)
    parser.add_argument("--num-samples", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    import scvi
    from cell2location.models import RegressionModel

    scvi.settings.seed = args.seed
    adata = ad.read_h5ad(args.reference)
    RegressionModel.setup_anndata(adata=adata, batch_key="batch", labels_key="cell_type")
    model = RegressionModel(adata)
    start = time.perf_counter()
    model.train(max_epochs=args.max_epochs, batch_size=2500, train_size=1, lr=0.002, accelerator="cpu")
    print(f"upstream training: {time.perf_counter() - start:.1f} s", file=sys.stderr)
    adata = model.export_posterior(adata, sample_kwargs={"num_samples": args.num_samples, "batch_size": 2500,
                                                         "accelerator": "cpu"})
    factors = adata.uns["mod"]["factor_names"]
    table = adata.varm["means_per_cluster_mu_fg"][[f"means_per_cluster_mu_fg_{f}" for f in factors]].copy()
    table.columns = list(factors)
    outdir = Path(args.outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    table.to_csv(outdir / "signatures.csv")


if __name__ == "__main__":
    main()
