"""Time one full-batch mapping step (loss, backward, Adam) with each objective implementation, side by side.

    .venv/bin/python bench/profile_step.py                      # the 800 x 1000 x 12 benchmark set, 1 thread
    .venv/bin/python bench/profile_step.py --dataset 2000x3000x20 --threads 2
    .venv/bin/python bench/profile_step.py --dataset 4000x10000x34 --device cuda
    .venv/bin/python bench/profile_step.py --only compiled read-every-step --rounds 4 --steps 300
    .venv/bin/python bench/profile_step.py --only compiled gather-rows --rounds 4 --steps 300

Implementations: pyro's Trace_ELBO over our model and guide (the path upstream takes), the fused −ELBO
with its likelihood pass run eagerly, and the same pass compiled with torch.compile. Each reads the step
losses back every 50 steps, as training does; the last row reads the loss after every step, as training
did before 2026-12-04 (on a GPU that makes the host wait for each step); ``gather-rows`` passes every
location's index, as full-batch steps did before 2026-12-06, so the local parameters are gathered and their
gradients scattered back (the same values; the full batch now takes them whole). The dataset folder is one made by
run_benchmark.py (its signatures and samples). ``--only`` picks rows by key (pyro, eager, compiled,
read-every-step, gather-rows); ``--rounds`` times them in turn that many times.
"""

from __future__ import annotations

import argparse
import time
from functools import partial
from pathlib import Path

import anndata as ad
import pandas as pd
import torch

from cell2location_nf.inference.allocator import retain_freed_memory
from cell2location_nf.inference.svi import READ_LOSSES_EVERY
from cell2location_nf.models.mapping_elbo import negative_elbo
from cell2location_nf.stages.mapping import LOSSES, MappingSettings, _LocationBatches, train_mapping
from cell2location_nf.stages.mapping_inputs import align_genes, combine_samples

HERE = Path(__file__).resolve().parent


def training_step(model, guide, step_args, loss_fn=None, read_every: int = READ_LOSSES_EVERY, fused: bool = True,
                  lr: float = 0.01):
    """A training step as a closure: loss (the compiled −ELBO unless ``loss_fn``), backward, Adam (fused, as
    training runs it, unless ``fused=False``), the losses read back every ``read_every`` steps."""
    loss_fn = loss_fn or partial(negative_elbo, use_compile=True)
    optimizer = torch.optim.Adam(guide.parameters(), lr=lr, fused=fused)
    pending: list[torch.Tensor] = []

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(model, guide, *step_args)
        loss.backward()
        optimizer.step()
        pending.append(loss.detach())
        if len(pending) >= read_every:
            torch.stack(pending).tolist()
            pending.clear()

    def finish() -> None:  # the device has finished every step once they are read
        if pending:
            torch.stack(pending).tolist()
            pending.clear()

    step.finish = finish
    return step


def time_steps(loss_fn, trained, step_args, steps: int, read_every: int) -> float:
    """Mean milliseconds per optimisation step (plain Adam) after two warm-up steps, reading the losses every
    ``read_every``."""
    step = training_step(trained.model, trained.guide, step_args, loss_fn, read_every, fused=False, lr=0.002)
    for _ in range(2):
        step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    step.finish()
    return (time.perf_counter() - start) / steps * 1000


def full_batch_step_inputs(data: Path, device: torch.device):
    """A dataset folder's mapping model and guide (after one eager set-up epoch) and its full-batch step arguments."""
    signatures = pd.read_csv(data / "signatures" / "reference.signatures.csv", index_col=0)
    samples = [ad.read_h5ad(p) for p in sorted(data.glob("sample_*.h5ad"))]
    adata, signatures = align_genes(combine_samples(samples, 10.0), signatures, "sig")
    trained = train_mapping(adata, signatures, MappingSettings(max_epochs=1, device=str(device), compile=False))
    loader = _LocationBatches(adata.X, trained.batch_index, trained.model.n_batches, None, device, 0)
    return trained, next(iter(loader(0)))


# the rows, in order, as --only names them
VARIANT_KEYS = ("pyro", "eager", "compiled", "read-every-step", "gather-rows")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="800x1000x12")
    parser.add_argument("--workdir", type=Path, default=HERE / "work")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--only", nargs="+", choices=list(VARIANT_KEYS), help="these rows only (keys below)")
    parser.add_argument("--rounds", type=int, default=1, help="time the rows in turn this many times")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    retain_freed_memory()  # as training does (inference/svi.py)

    device = torch.device(args.device)
    trained, step_args = full_batch_step_inputs(args.workdir / args.dataset, device)
    adata, signatures = trained.adata, trained.signatures
    compiled = partial(negative_elbo, use_compile=True)
    every_index = (*step_args[:-1], torch.arange(adata.n_obs, device=device))
    rows = {"pyro": ("pyro Trace_ELBO", LOSSES["pyro"], READ_LOSSES_EVERY, step_args),
            "eager": ("fused, eager", negative_elbo, READ_LOSSES_EVERY, step_args),
            "compiled": ("fused, compiled", compiled, READ_LOSSES_EVERY, step_args),
            "read-every-step": ("fused, compiled, loss read after every step", compiled, 1, step_args),
            "gather-rows": ("fused, compiled, every location gathered by index", compiled, READ_LOSSES_EVERY,
                            every_index)}
    variants = {name: (loss_fn, read_every, inputs) for key, (name, loss_fn, read_every, inputs) in rows.items()
                if not args.only or key in args.only}
    print(f"{args.dataset}: {adata.n_obs} locations x {adata.n_vars} genes x {signatures.shape[1]} types, "
          f"{args.threads} thread(s), device {device}, mean of {args.steps} steps, {args.rounds} round(s) in turn\n")
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(args.rounds):
        for name, (loss_fn, read_every, inputs) in variants.items():
            times[name].append(time_steps(loss_fn, trained, inputs, args.steps, read_every))
    print("| implementation | ms per step (rounds) | mean | relative to the first row |\n|---|---|---|---|")
    reference = None
    for name, values in times.items():
        ms = sum(values) / len(values)
        reference = reference or ms
        print(f"| {name} | {', '.join(f'{v:.2f}' for v in values)} | {ms:.2f} | {reference / ms:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
