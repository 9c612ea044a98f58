"""``train-reference`` and ``export-reference``: stage 1, signatures from the single-cell reference."""

from __future__ import annotations

from dataclasses import asdict

import anndata as ad
import click

from ..inference.checkpoint import checkpoint_for
from ..inference.device import DEVICE_CHOICES
from ..stages.reference import ReferenceSettings, export_reference, load_reference, save_reference, train_reference
from .options import checkpoint_options, compile_cache_option, posterior_export_options


def _keys_from(adata: ad.AnnData, labels_key, batch_key, covariate_keys):
    """Explicit options win; otherwise the keys prepare-reference recorded in uns['cell2location_nf']."""
    recorded = dict(adata.uns.get("cell2location_nf", {}))
    labels = labels_key or recorded.get("labels_key") or "cell_type"
    batch = batch_key if batch_key is not None else (recorded.get("batch_key") or None)
    if covariate_keys is not None:
        covariates = [k.strip() for k in covariate_keys.split(",") if k.strip()]
    else:
        covariates = list(recorded.get("categorical_covariate_keys", []))
    return labels, batch or None, covariates


@click.command("train-reference")
@click.option("--reference", type=click.Path(exists=True, dir_okay=False), required=True,
              help="Prepared reference .h5ad (prepare-reference).")
@click.option("--labels-key", default=None, help="obs label column (default: as prepared).")
@click.option("--batch-key", default=None, help="obs batch column (default: as prepared).")
@click.option("--categorical-covariate-keys", default=None, help="Comma-separated covariates (default: as prepared).")
@click.option("--max-epochs", type=int, default=250, show_default=True,
              help="Epochs; 0 uses upstream's heuristic min(20000/cells*1000, 1000).")
@click.option("--batch-size", type=int, default=2500, show_default=True, help="Cells per minibatch; 0 = full batch.")
@click.option("--lr", type=float, default=0.002, show_default=True, help="Adam learning rate.")
@click.option("--clip-norm", type=float, default=None, help="Gradient norm clipping (off by default, as upstream).")
@click.option("--min-cells-per-label", type=int, default=10, show_default=True,
              help="Reject cell types with fewer cells.")
@click.option("--device", type=click.Choice(DEVICE_CHOICES), default="auto", show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--elbo", type=click.Choice(["fused", "pyro"]), default="fused", show_default=True,
              help="Objective: the −ELBO in plain torch, or pyro's Trace_ELBO (same value, slower).")
@click.option("--compile/--no-compile", "compile_", default=None,
              help="torch.compile the objective (default: only the per-cell objective, when cells x genes x "
                   "epochs >= 5e9; summed per design-row group it runs eagerly).")
@checkpoint_options
@compile_cache_option
@posterior_export_options("reference")
def train_reference_cmd(reference, labels_key, batch_key, categorical_covariate_keys, max_epochs, batch_size, lr,
                        clip_norm, min_cells_per_label, device, seed, elbo, compile_, checkpoint_dir, checkpoint_every,
                        num_samples, use_quantiles, outdir, prefix) -> None:
    """Estimate one expression signature per cell type (NB regression) and export it."""
    adata = ad.read_h5ad(reference)
    labels, batch, covariates = _keys_from(adata, labels_key, batch_key, categorical_covariate_keys)
    settings = ReferenceSettings(max_epochs or None, batch_size or None, lr, seed, device, clip_norm,
                                 min_cells_per_label, elbo, compile_)
    keys = {"labels": labels, "batch": batch, "covariates": covariates}
    checkpoint = checkpoint_for(checkpoint_dir, checkpoint_every, "reference", [reference],
                                {**asdict(settings), "device": None, **keys})
    trained = train_reference(adata, labels, batch, covariates, settings, source=reference, checkpoint=checkpoint)
    model_path = save_reference(trained, f"{outdir}/{prefix}.reference_model.h5")
    files = export_reference(trained, outdir, prefix, num_samples, use_quantiles)
    if checkpoint is not None:
        checkpoint.discard()
    click.echo(f"Signatures: {files['signatures']}; model: {model_path}")


@click.command("export-reference")
@click.option("--model", "model_path", type=click.Path(exists=True, dir_okay=False), required=True,
              help="<prefix>.reference_model.h5 from train-reference.")
@click.option("--reference", type=click.Path(exists=True, dir_okay=False), required=True,
              help="The prepared reference the model was trained on.")
@posterior_export_options("reference")
def export_reference_cmd(model_path, reference, num_samples, use_quantiles, outdir, prefix) -> None:
    """Re-export signatures and QC from saved parameters, without retraining."""
    trained = load_reference(model_path, ad.read_h5ad(reference), source=reference)
    files = export_reference(trained, outdir, prefix, num_samples, use_quantiles)
    click.echo(f"Signatures: {files['signatures']}")
