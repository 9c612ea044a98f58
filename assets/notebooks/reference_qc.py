# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Reference signatures: quality control
#
# Checks of stage 1 (negative-binomial regression on the single-cell reference), as in the
# cell2location tutorial: which genes the filter kept, whether training converged, whether the model
# reconstructs the counts, and whether the signatures agree with plain cluster averages.

# %% tags=["parameters"]
sample = "reference"
gene_statistics = "reference.gene_statistics.csv"
prepared_h5ad = "reference.prepared.h5ad"
trained_h5ad = "reference.trained.h5ad"
model = "reference.reference_model.h5"
signatures = "reference.signatures.csv"
summary = "reference.training_summary.json"
artifact_dir = "artifacts"
cpus = 1

# %%
import json
import warnings

warnings.filterwarnings("ignore", message="IProgress not found")  # tqdm's notebook bar; plain output is fine

import anndata as ad
import pandas as pd
import torch
from IPython.display import Markdown, display
from matplotlib_inline.backend_inline import set_matplotlib_formats

from cell2location_nf.models.reference import cluster_averages
from cell2location_nf.plots.reference_qc import plot_reconstruction, plot_signature_vs_average
from cell2location_nf.plots.training import plot_history
from cell2location_nf.preprocessing.gene_filter import GeneFilterCutoffs, plot_gene_filter
from cell2location_nf.reports.mqc import save_image_mqc, write_table_mqc
from cell2location_nf.stages.reference import load_reference, reconstruction

torch.set_num_threads(int(cpus))
set_matplotlib_formats("png")  # the plots use the Agg backend; show returned figures inline
prepared = ad.read_h5ad(prepared_h5ad)
trained = ad.read_h5ad(trained_h5ad)
stats = json.loads(open(summary).read())
settings = prepared.uns["cell2location_nf"]
reference = load_reference(model, prepared, source=prepared_h5ad)

# %% [markdown]
# ## Gene filter
# Genes in the shaded region are dropped: detected in too few cells, or rarely and at a low level.

# %%
gene_stats = pd.read_csv(gene_statistics, index_col=0)
cut = settings["gene_filter"]
cutoffs = GeneFilterCutoffs(cut["cell_count_cutoff"], cut["cell_percentage_cutoff2"], cut["nonz_mean_cutoff"])
display(Markdown(f"Kept **{int(gene_stats['kept'].sum())}** of {len(gene_stats)} genes "
                 f"(cut-offs: {cut['cell_count_cutoff']} cells, {cut['cell_percentage_cutoff2']:.1%} of cells, "
                 f"non-zero mean {cut['nonz_mean_cutoff']})."))
display(plot_gene_filter(gene_stats, cut["n_cells"], cutoffs))

# %% [markdown]
# ## Cells per cell type and batch
# Types with few cells give noisy signatures; a type missing from a batch is fine, the batch effect is
# shared across types.

# %%
labels_key, batch_key = settings["labels_key"], settings["batch_key"]
columns = prepared.obs[batch_key] if batch_key else pd.Series("all cells", index=prepared.obs_names, name="batch")
counts = pd.crosstab(prepared.obs[labels_key], columns, margins=True, margins_name="total")
display(counts)

# %% [markdown]
# ## Training history
# The −ELBO should fall and flatten; a curve still falling at the end means more epochs are needed.

# %%
history_figure = plot_history(reference.history.elbo_train, iter_start=min(20, len(reference.history.elbo_train) // 5),
                              title="Reference model training")
display(history_figure)

# %% [markdown]
# ## Reconstruction
# Observed counts against the posterior expected counts μ for up to 1,000 cells: a noisy diagonal.

# %%
means = trained.uns["mod"]["post_sample_means"]
observed, expected = reconstruction(reference, means)
reconstruction_figure = plot_reconstruction(observed, expected)
display(reconstruction_figure)

# %% [markdown]
# ## Signatures against cluster averages
# The estimated signatures should follow the plain per-type averages, with batch and technical effects
# removed.

# %%
signature_table = pd.read_csv(signatures, index_col=0)
averages = cluster_averages(prepared.X, reference.design.labels, reference.design.n_factors)
display(plot_signature_vs_average(averages, signature_table.to_numpy().T))

# %% [markdown]
# ## Summary

# %%
metrics = {
    "cells": stats["cells"], "genes_kept": stats["genes"], "genes_before": cut["n_genes_before"],
    "cell_types": stats["cell_types"], "batches": stats["batches"], "epochs": stats["epochs"],
    "final_elbo": stats["final_elbo"], "reconstruction_pearson": stats["reconstruction_pearson"],
    "runtime_s": stats["runtime_s"], "device": stats["device"],
}
display(pd.Series(metrics, name=sample).to_frame())
write_table_mqc(artifact_dir, "cell2location_reference", "Reference training",
                "Stage 1: the reference model's data, training and fit (see the reference QC notebook).",
                {sample: metrics}, {
                    "cells": {"title": "Cells", "format": "{:,.0f}"},
                    "genes_kept": {"title": "Genes kept", "format": "{:,.0f}"},
                    "genes_before": {"title": "Genes before filter", "format": "{:,.0f}", "hidden": True},
                    "cell_types": {"title": "Cell types", "format": "{:,.0f}"},
                    "batches": {"title": "Batches", "format": "{:,.0f}"},
                    "epochs": {"title": "Epochs", "format": "{:,.0f}"},
                    "final_elbo": {"title": "Final -ELBO", "format": "{:,.1f}"},
                    "reconstruction_pearson": {"title": "Reconstruction r", "min": 0, "max": 1,
                                               "format": "{:.3f}"},
                    "runtime_s": {"title": "Runtime (s)", "format": "{:,.1f}"},
                    "device": {"title": "Device"},
                })
_ = save_image_mqc(history_figure, artifact_dir, f"{sample} training history",
                   "-ELBO per epoch of the reference model; it should fall and flatten.")
_ = save_image_mqc(reconstruction_figure, artifact_dir, f"{sample} reconstruction",
                   "Observed against posterior expected counts for up to 1,000 cells: a noisy diagonal.")
