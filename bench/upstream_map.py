"""Run upstream cell2location 0.1.5 mapping (run inside bench/.venv-upstream, see setup_upstream.sh).

Same inputs as ours: the signature CSV and the spatial .h5ad files; samples are concatenated with the
sample as batch, as the tutorial does. Writes <outdir>/<sample>.cell_abundance_{means,q05}.csv.
"""

import argparse
import sys
import time
from pathlib import Path

import anndata as ad
import pandas as pd


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--signatures", required=True)
    parser.add_argument("--outdir", required=True)
    parser.add_argument("--max-epochs", type=int, default=30000)
    parser.add_argument("--n-cells-per-location", type=float, required=True)
    parser.add_argument("--detection-alpha", type=float, default=20.0)
    parser.add_argument("--num-samples", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--export-batch-size", type=int, default=None,
                        help="Locations per batch when sampling the posterior (default: all, as the tutorial does).")
    parser.add_argument("--accelerator", choices=["cpu", "gpu"], default="cpu")
    parser.add_argument("spatial", nargs="+")
    args = parser.parse_args()

    import cell2location
    import scvi

    scvi.settings.seed = args.seed
    signatures = pd.read_csv(args.signatures, index_col=0)
    parts = []
    for path in sorted(args.spatial):
        part = ad.read_h5ad(path)
        part.obs["sample"] = Path(path).stem
        parts.append(part)
    adata = ad.concat(parts)
    shared = adata.var_names.intersection(signatures.index)
    adata, signatures = adata[:, shared].copy(), signatures.loc[shared]
    cell2location.models.Cell2location.setup_anndata(adata=adata, batch_key="sample")
    model = cell2location.models.Cell2location(adata, cell_state_df=signatures,
                                               N_cells_per_location=args.n_cells_per_location,
                                               detection_alpha=args.detection_alpha)
    start = time.perf_counter()
    model.train(max_epochs=args.max_epochs, batch_size=None, train_size=1, accelerator=args.accelerator)
    print(f"upstream training: {time.perf_counter() - start:.1f} s", file=sys.stderr)
    adata = model.export_posterior(adata, sample_kwargs={"num_samples": args.num_samples,
                                                         "batch_size": args.export_batch_size or adata.n_obs,
                                                         "accelerator": args.accelerator})
    outdir = Path(args.outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    for sample in adata.obs["sample"].unique():
        rows = adata.obs["sample"] == sample
        for kind in ("means", "q05"):
            table = adata.obsm[f"{kind}_cell_abundance_w_sf"].loc[rows].copy()
            table.columns = [c.replace(f"{kind}cell_abundance_w_sf_", "") for c in table.columns]
            table.to_csv(outdir / f"{sample}.cell_abundance_{kind}.csv")


if __name__ == "__main__":
    main()
