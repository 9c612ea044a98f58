"""``prepare-reference`` and ``prepare-spatial``: read, check and filter the inputs."""

from __future__ import annotations

import click

from ..preprocessing.gene_filter import GeneFilterCutoffs
from ..preprocessing.genes import GENE_MATCH_MODES
from ..preprocessing.prepare import prepare_reference, prepare_spatial


def _keys(value: str | None) -> list[str]:
    return [k.strip() for k in value.split(",") if k.strip()] if value else []


@click.command("prepare-reference")
@click.option("--reference", type=click.Path(exists=True, dir_okay=False), required=True, help="Reference .h5ad")
@click.option("--labels-key", default="cell_type", show_default=True, help="obs column with cell-type labels.")
@click.option("--batch-key", default=None, help="obs column with the batch of each cell.")
@click.option("--categorical-covariate-keys", default=None, help="Comma-separated obs covariate columns.")
@click.option("--layer", default=None, help="Layer with raw counts (default: X).")
@click.option("--cell-count-cutoff", type=float, default=5, show_default=True)
@click.option("--cell-percentage-cutoff2", type=float, default=0.03, show_default=True)
@click.option("--nonz-mean-cutoff", type=float, default=1.12, show_default=True)
@click.option("--output", default="reference.prepared.h5ad", show_default=True, type=click.Path(dir_okay=False))
@click.option("--plot", default="gene_filter.png", show_default=True, type=click.Path(dir_okay=False))
@click.option("--gene-stats", default=None, type=click.Path(dir_okay=False),
              help="CSV of per-gene filter statistics (n_cells, nonz_mean, kept) for all genes.")
def prepare_reference_cmd(reference, labels_key, batch_key, categorical_covariate_keys, layer,
                          cell_count_cutoff, cell_percentage_cutoff2, nonz_mean_cutoff, output, plot,
                          gene_stats) -> None:
    """Check reference counts and columns, apply the cell2location gene filter, plot it."""
    cutoffs = GeneFilterCutoffs(cell_count_cutoff, cell_percentage_cutoff2, nonz_mean_cutoff)
    adata = prepare_reference(reference, labels_key, batch_key or None, _keys(categorical_covariate_keys),
                              layer or None, cutoffs, output, plot, gene_stats)
    click.echo(f"Reference: {adata.n_obs} cells x {adata.n_vars} genes -> {output}")


@click.command("prepare-spatial")
@click.option("--sample", required=True, help="Sample id (library id in uns['spatial']).")
@click.option("--spaceranger-dir", type=click.Path(exists=True, file_okay=False), default=None)
@click.option("--h5ad", type=click.Path(exists=True, dir_okay=False), default=None)
@click.option("--reference", type=click.Path(exists=True, dir_okay=False), required=True,
              help="Prepared reference .h5ad (genes to keep).")
@click.option("--gene-match", type=click.Choice(GENE_MATCH_MODES), default="auto", show_default=True)
@click.option("--hd-bin-size", type=int, default=8, show_default=True, help="Visium HD bin size in µm.")
@click.option("--batch", default=None, help="Batch of this sample (default: the sample id).")
@click.option("--n-cells-per-location", type=float, default=None, help="Expected cells per location.")
@click.option("--output", default=None, type=click.Path(dir_okay=False), help="Default: <sample>.prepared.h5ad")
def prepare_spatial_cmd(sample, spaceranger_dir, h5ad, reference, gene_match, hd_bin_size, batch,
                        n_cells_per_location, output) -> None:
    """Read one spatial sample, set mitochondrial genes aside and keep the genes shared with the reference."""
    if bool(spaceranger_dir) == bool(h5ad):
        raise click.UsageError("give exactly one of --spaceranger-dir or --h5ad")
    kind, path = ("spaceranger", spaceranger_dir) if spaceranger_dir else ("h5ad", h5ad)
    output = output or f"{sample}.prepared.h5ad"
    adata = prepare_spatial(kind, path, sample, reference, output, gene_match, hd_bin_size, batch,
                            n_cells_per_location)
    click.echo(f"Sample {sample}: {adata.n_obs} locations x {adata.n_vars} genes -> {output}")
