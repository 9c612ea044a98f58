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
# # Spatial mapping: quality control of one sample
#
# Checks of stage 2 (the cell2location model, trained jointly on all samples) for one sample, as in
# the cell2location tutorial: convergence, reconstruction of the counts, RNA detection and total
# abundance across batches, and where the most abundant cell types lie.

# %% tags=["parameters"]
sample = "sample"
mapped_h5ad = "sample.mapped.h5ad"
signatures = "reference.signatures.csv"
model = "mapping.mapping_model.h5"
summary = "mapping.training_summary.json"
top_n = 6
artifact_dir = "artifacts"
cpus = 1

# %%
import json
import warnings

warnings.filterwarnings("ignore", message="IProgress not found")  # tqdm's notebook bar; plain output is fine

import anndata as ad
import numpy as np
import pandas as pd
import torch
from IPython.display import Markdown, display
from matplotlib_inline.backend_inline import set_matplotlib_formats

from cell2location_nf.io.model_store import load_model
from cell2location_nf.plots.mapping_qc import plot_abundance_maps, plot_spatial_qc_across_batches
from cell2location_nf.plots.reference_qc import plot_reconstruction
from cell2location_nf.plots.training import plot_history
from cell2location_nf.reports.mqc import save_image_mqc, write_table_mqc
from cell2location_nf.stages.mapping import sample_reconstruction

torch.set_num_threads(int(cpus))
set_matplotlib_formats("png")  # the plots use the Agg backend; show returned figures inline
mapped = ad.read_h5ad(mapped_h5ad)
signature_table = pd.read_csv(signatures, index_col=0)
stats = json.loads(open(summary).read())
mapped.obs["total_counts"] = np.asarray(mapped.X.sum(axis=1)).ravel()
display(Markdown(f"**{sample}**: {mapped.n_obs:,} locations × {mapped.n_vars:,} genes, "
                 f"{signature_table.shape[1]} cell types; mapped jointly with {len(stats['samples'])} sample(s) "
                 f"for {stats['epochs']:,} epochs (schedule '{stats['schedule']}', device {stats['device']})."))

# %% [markdown]
# ## Training history
# One model is trained on all samples, so this curve is shared by every sample's notebook. The −ELBO
# should have flattened by the end.

# %%
history = load_model(model).history
display(plot_history(history, iter_start=1000 if len(history) > 2000 else 0, title="Mapping model training"))

# %% [markdown]
# ## Reconstruction
# Observed counts against the posterior expected counts μ for up to 1,000 locations of this sample.

# %%
observed, expected = sample_reconstruction(mapped, signature_table)
reconstruction_r = float(np.corrcoef(np.log1p(observed.ravel()), np.log1p(expected.ravel()))[0, 1])
reconstruction_figure = plot_reconstruction(observed, expected)
display(Markdown(f"Pearson correlation of log(1 + counts): **{reconstruction_r:.3f}**"))
display(reconstruction_figure)

# %% [markdown]
# ## Spatial QC across batches
# Total counts, total cell abundance and RNA detection sensitivity y_s over the tissue. Detection should
# vary less than counts; abundance should follow the tissue, not the sequencing depth. The table puts this
# sample beside every sample of the joint model.

# %%
spatial_qc_figure = plot_spatial_qc_across_batches(mapped)
display(spatial_qc_figure)
batches = pd.DataFrame.from_dict(stats["samples"], orient="index")
batches.index.name = "sample"
display(batches.style.format(precision=1).apply(
    lambda row: ["font-weight: bold" if row.name == sample else "" for _ in row], axis=1))

# %% [markdown]
# ## Abundance of the most abundant cell types
# The 5% quantile of the posterior (q05), as the tutorial plots it: a cell type shown here is confidently
# present.

# %%
means = mapped.obsm["means_cell_abundance_w_sf"] if "means_cell_abundance_w_sf" in mapped.obsm \
    else mapped.obsm["q50_cell_abundance_w_sf"]
means.columns = list(signature_table.columns)
top = list(means.mean().sort_values(ascending=False).index[: int(top_n)])
abundance_figure = plot_abundance_maps(mapped, top, library=sample)
display(abundance_figure)

# %% [markdown]
# ## Mean abundance per cell type

# %%
q05 = mapped.obsm["q05_cell_abundance_w_sf"].set_axis(list(signature_table.columns), axis=1)
per_type = pd.DataFrame({"mean cells per location": means.mean(), "q05 mean": q05.mean(),
                         "total cells": means.sum(), "share of cells": means.sum() / means.to_numpy().sum()})
display(per_type.sort_values("total cells", ascending=False).style.format(
    {"mean cells per location": "{:.2f}", "q05 mean": "{:.2f}", "total cells": "{:,.0f}", "share of cells": "{:.1%}"}))

# %% [markdown]
# ## Summary

# %%
metrics = {
    "spots": mapped.n_obs, "genes": mapped.n_vars, "median_umis": float(np.median(mapped.obs["total_counts"])),
    "final_elbo": stats["final_elbo"], "reconstruction_pearson": reconstruction_r,
    "total_cells": float(mapped.obs["total_abundance"].sum()),
    "median_detection": float(np.median(mapped.obs["detection_y_s"])),
}
display(pd.Series(metrics, name=sample).to_frame())
write_table_mqc(artifact_dir, "cell2location_mapping", "Mapping per sample",
                "Stage 2: each sample's data and fit; the model and its -ELBO are shared by all samples "
                "(see each sample's mapping QC notebook).",
                {sample: metrics}, {
                    "spots": {"title": "Spots", "format": "{:,.0f}"},
                    "genes": {"title": "Genes", "format": "{:,.0f}"},
                    "median_umis": {"title": "Median UMIs", "format": "{:,.0f}"},
                    "final_elbo": {"title": "Final -ELBO", "format": "{:,.1f}"},
                    "reconstruction_pearson": {"title": "Reconstruction r", "min": 0, "max": 1,
                                               "format": "{:.3f}"},
                    "total_cells": {"title": "Total cells estimated", "format": "{:,.0f}"},
                    "median_detection": {"title": "Median detection y_s", "format": "{:.2f}"},
                }, name=f"{sample}_mapping")
_ = save_image_mqc(abundance_figure, artifact_dir, f"{sample} cell abundance",
                   f"q05 abundance of the {len(top)} most abundant cell types over the tissue.")
_ = save_image_mqc(spatial_qc_figure, artifact_dir, f"{sample} spatial QC",
                   "Total counts, total cell abundance and RNA detection sensitivity y_s over the tissue.")
_ = save_image_mqc(reconstruction_figure, artifact_dir, f"{sample} reconstruction",
                   "Observed against posterior expected counts for up to 1,000 locations: a noisy diagonal.")
