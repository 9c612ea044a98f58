"""``map-spatial`` and ``export-mapping``: stage 2, cell abundances at every location of every sample."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import anndata as ad
import click
import pandas as pd

from ..inference.checkpoint import checkpoint_for
from ..inference.device import DEVICE_CHOICES
from ..stages.mapping import (
    SCHEDULES,
    export_mapping,
    load_mapping,
    save_mapping,
    settings_for_schedule,
    train_mapping,
)
from ..stages.mapping_inputs import align_genes, combine_samples, drop_empty_locations
from .options import checkpoint_options, compile_cache_option, posterior_export_options


def load_inputs(signatures_path: str, spatial: tuple[str, ...], default_n_cells: float):
    """Signatures and the combined samples (sorted by path, so the result does not depend on argument order)."""
    signatures = pd.read_csv(signatures_path, index_col=0)
    adatas = [ad.read_h5ad(p) for p in sorted(spatial)]
    combined = drop_empty_locations(combine_samples(adatas, default_n_cells))
    return align_genes(combined, signatures, signatures_path)


def export_options(fn):
    fn = posterior_export_options("mapping")(fn)
    fn = click.option("--per-type-expression", is_flag=True,
                      help="Also write <sample>.expression_per_cell_type.h5ad: observed counts split among cell "
                           "types (one layer per type, streamed by location chunk).")(fn)
    fn = click.option("--n-cells-per-location", type=float, default=30.0, show_default=True,
                      help="Expected cells per location for samples that do not set their own.")(fn)
    fn = click.argument("spatial", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))(fn)
    fn = click.option("--signatures", type=click.Path(exists=True, dir_okay=False), required=True,
                      help="Signature CSV (genes x cell types) from train-reference.")(fn)
    return fn


@click.command("map-spatial")
@export_options
@click.option("--schedule", type=click.Choice(sorted(SCHEDULES)), default="fast", show_default=True,
              help="Training preset: 'fast' (lr 0.04 decaying to 0.012, guide scales at 0.35 of that, 9,000 epochs; "
                   "with --batch-size below the number of locations 100 epochs, lr falling with minibatches per "
                   "epoch; see bench/RESULTS.md) "
                   "or 'upstream' (30,000 full-batch epochs at lr 0.002 from the prior means, as cell2location).")
@click.option("--max-epochs", type=int, default=None, help="Override the schedule's epochs.")
@click.option("--batch-size", type=int, default=0, show_default=True,
              help="Largest minibatch of locations (an epoch's minibatches are of equal size); 0 = all.")
@click.option("--lr", type=float, default=None, help="Override the schedule's (initial) learning rate.")
@click.option("--clip-norm", type=float, default=None, help="Gradient norm clipping (off by default, as upstream).")
@click.option("--detection-alpha", type=float, default=20.0, show_default=True,
              help="Prior strength of per-location detection efficiency (upstream: 20; 200 for less variation).")
@click.option("--a-factors-per-location", type=float, default=7.0, show_default=True)
@click.option("--b-groups-per-location", type=float, default=7.0, show_default=True)
@click.option("--n-groups", type=int, default=50, show_default=True)
@click.option("--warm-start/--no-warm-start", default=None,
              help="Override the schedule: start abundances from Poisson NMF with fixed signatures, or not.")
@click.option("--warm-start-updates", type=click.IntRange(min=1), default=None,
              help="Most updates of the warm start's Poisson NMF (default 300).")
@click.option("--warm-start-relaxation", type=click.FloatRange(1.0, 2.0, max_open=True), default=None,
              help="Exponent of the warm start's update factors: above 1 over-relaxes them (default 1: plain "
                   "multiplicative updates).")
@click.option("--warm-start-tol", type=click.FloatRange(min=0.0), default=None,
              help="Stop the warm start's Poisson NMF once its deviance falls by less than this fraction over 10 "
                   "updates (default 0: never).")
@click.option("--composition-start", type=click.FloatRange(0.0, 1.0), default=None,
              help="Override the schedule: share of each location's starting cell-type composition taken from "
                   "Poisson NMF with fixed signatures, the rest uniform; totals start at the prior mean "
                   "(fast: 0.2, upstream: 0; ignored with --warm-start).")
@click.option("--lr-final", type=float, default=None,
              help="Override the schedule's final learning rate (exponential decay from --lr).")
@click.option("--lr-warmup", type=click.IntRange(min=0), default=None,
              help="Epochs of linear learning-rate warm-up to --lr before the decay (default 0).")
@click.option("--tol", type=float, default=None,
              help="Stop when the mean -ELBO over 200 epochs improves by less than this (relative). Off in "
                   "every preset: the -ELBO flattens within its noise before the abundances settle "
                   "(docs/usage.md).")
@click.option("--min-epochs", type=int, default=1000, show_default=True, help="Never stop (--tol) before this.")
@click.option("--elbo", type=click.Choice(["fused", "pyro"]), default="fused", show_default=True,
              help="Objective implementation: fused torch (faster) or pyro's Trace_ELBO (same objective).")
@click.option("--scale-lr-factor", type=float, default=None,
              help="Override the schedule: learning rate of the guide's scale parameters relative to --lr "
                   "(fast: 0.35; on minibatches and upstream: 1).")
@click.option("--compile/--no-compile", "compile_", default=None,
              help="torch.compile the objective (default: when locations x genes x epochs >= 5e8).")
@click.option("--device", type=click.Choice(DEVICE_CHOICES), default="auto", show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@checkpoint_options
@compile_cache_option
def map_spatial_cmd(signatures, spatial, n_cells_per_location, per_type_expression, prefix, outdir,
                    use_quantiles, num_samples, schedule, max_epochs, batch_size, lr, clip_norm, detection_alpha,
                    a_factors_per_location, b_groups_per_location, n_groups, warm_start, warm_start_updates,
                    warm_start_relaxation, warm_start_tol, composition_start, lr_final, lr_warmup, tol, min_epochs,
                    elbo, scale_lr_factor, compile_, device, seed, checkpoint_dir, checkpoint_every) -> None:
    """Estimate absolute cell abundances of every cell type at every location, all samples jointly."""
    adata, table = load_inputs(signatures, spatial, n_cells_per_location)
    settings = settings_for_schedule(
        schedule, n_obs=adata.n_obs, max_epochs=max_epochs, lr=lr, lr_final=lr_final, lr_warmup=lr_warmup,
        warm_start=warm_start, warm_start_updates=warm_start_updates, warm_start_relaxation=warm_start_relaxation,
        warm_start_tol=warm_start_tol, composition_start=composition_start,
        scale_lr_factor=scale_lr_factor, batch_size=batch_size or None, seed=seed, device=device,
        clip_norm=clip_norm, detection_alpha=detection_alpha,
        A_factors_per_location=a_factors_per_location, B_groups_per_location=b_groups_per_location,
        n_groups=n_groups, elbo=elbo, tol=tol, min_epochs=min_epochs, compile=compile_)
    checkpoint = checkpoint_for(checkpoint_dir, checkpoint_every, "mapping", [signatures, *spatial],
                                {**asdict(settings), "device": None, "n_cells_per_location": n_cells_per_location})
    trained = train_mapping(adata, table, settings, source=signatures, checkpoint=checkpoint)
    model_path = save_mapping(trained, Path(outdir) / f"{prefix}.mapping_model.h5")
    files = export_mapping(trained, outdir, num_samples, use_quantiles, prefix, per_type_expression)
    if checkpoint is not None:
        checkpoint.discard()
    click.echo(f"Mapped {adata.n_obs} locations; {len(files)} files in {outdir}; model: {model_path}")


@click.command("export-mapping")
@export_options
@click.option("--model", "model_path", type=click.Path(exists=True, dir_okay=False), required=True,
              help="<prefix>.mapping_model.h5 from map-spatial.")
def export_mapping_cmd(signatures, spatial, n_cells_per_location, per_type_expression, prefix, outdir,
                       use_quantiles, num_samples, model_path) -> None:
    """Re-export abundances and QC from saved parameters, without retraining."""
    adata, table = load_inputs(signatures, spatial, n_cells_per_location)
    trained = load_mapping(model_path, adata, table)
    files = export_mapping(trained, outdir, num_samples, use_quantiles, prefix, per_type_expression)
    click.echo(f"Exported {len(files)} files to {outdir}")
