"""Where a minibatch step's time goes on a synthetic Visium HD slide: loading, −ELBO, backward, Adam.

    .venv/bin/python bench/minibatch_step.py                                   # 200,000 bins, minibatches of 5,000
    .venv/bin/python bench/minibatch_step.py --dataset hd_20000x5000x30 --steps 40
    .venv/bin/python bench/minibatch_step.py --profile 10                      # and torch.profiler's top operators
    .venv/bin/python bench/minibatch_step.py --profile 10 --shapes             # those operators by input shapes
    .venv/bin/python bench/minibatch_step.py --perf-record steps.data          # perf's samples of the timed steps

The slide comes from ``bench/run_scale.py`` (run it first). The model, guide, minibatch loader, compiled
objective (dynamic shapes, as a minibatch mapping compiles it) and Adam are the mapping's own; the guide starts
at the prior means (no warm start: the step's cost does not depend on where it starts). After ``--warmup``
steps, which compile, it times ``--steps`` steps phase by phase and prints milliseconds per step, and the page
faults per step.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from functools import partial
from pathlib import Path

import torch

from cell2location_nf.cli.mapping import load_inputs
from cell2location_nf.inference.allocator import retain_freed_memory
from cell2location_nf.inference.compile import DYNAMIC, prepare_compile
from cell2location_nf.inference.svi import _adam, seed_everything
from cell2location_nf.models.guide import MeanFieldGuide
from cell2location_nf.models.mapping import LOCAL_SITES
from cell2location_nf.models.mapping_elbo import negative_elbo
from cell2location_nf.stages.mapping import MappingSettings, _LocationBatches, batch_codes, build_model

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from attach_profile import huge_pages_mib  # noqa: E402
from perf_sampling import perf_record  # noqa: E402

PHASES = ("load", "loss", "backward", "adam")


def step_inputs(data: Path, batch_size: int):
    """The slide's model, guide and minibatch loader, as ``train_mapping`` builds them."""
    adata, signatures = load_inputs(str(data / "signatures.csv"), (str(data / "hd.h5ad"),), 1.5)
    settings = MappingSettings(batch_size=batch_size, device="cpu")
    seed_everything(settings.seed, "cpu")
    model = build_model(adata, signatures, settings, torch.device("cpu"))
    batch_index = batch_codes(adata)
    guide = MeanFieldGuide(model.initial_values(batch_index), local_sites=LOCAL_SITES)
    loader = _LocationBatches(adata.X, batch_index, model.n_batches, batch_size, torch.device("cpu"), settings.seed)
    return model, guide, loader


def endless(loader):
    epoch = 0
    while True:
        yield from loader(epoch)
        epoch += 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, default=HERE / "work")
    parser.add_argument("--dataset", default="hd_200000x5000x30")
    parser.add_argument("--batch-size", type=int, default=5000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=50, help="untimed steps first (they compile)")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--profile", type=int, default=0, help="then profile this many steps with torch.profiler")
    parser.add_argument("--shapes", action="store_true", help="profile rows per operator and input shapes")
    parser.add_argument("--perf-record", type=Path, help="record the timed steps with Linux perf into this file")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    prepare_compile(torch.device("cpu"))
    retain_freed_memory()  # as training does: freed (locations x genes) arrays are reused, not page-faulted
    model, guide, loader = step_inputs(args.workdir / args.dataset, args.batch_size)
    loss_fn = partial(negative_elbo, use_compile=DYNAMIC)
    optimizer = _adam(guide.parameters(), 0.01)
    batches = endless(loader)
    totals = dict.fromkeys(PHASES, 0.0)

    def step(timed: bool) -> None:
        marks = [time.perf_counter()]
        step_args = next(batches)
        marks.append(time.perf_counter())
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(model, guide, *step_args)
        marks.append(time.perf_counter())
        loss.backward()
        marks.append(time.perf_counter())
        optimizer.step()
        marks.append(time.perf_counter())
        if timed:
            for phase, start, end in zip(PHASES, marks, marks[1:], strict=False):
                totals[phase] += end - start

    for _ in range(args.warmup):
        step(False)
    faults_before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    with perf_record(args.perf_record):
        for _ in range(args.steps):
            step(True)
    faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults_before) / args.steps
    per_step = {k: v / args.steps * 1000 for k, v in totals.items()}
    print(f"{args.dataset}, minibatches of {args.batch_size}, {args.threads} threads, {args.steps} steps "
          f"after {args.warmup}: ms per step")
    for phase in PHASES:
        print(f"  {phase:9s} {per_step[phase]:8.1f}")
    print(f"  {'total':9s} {sum(per_step.values()):8.1f}")
    print(f"minor page faults per step: {faults:.0f} (each a 4 KiB page the kernel maps and zero-fills)")
    print(f"resident in transparent huge pages at the end: {huge_pages_mib():.0f} MiB")
    if args.profile:
        cpu = [torch.profiler.ProfilerActivity.CPU]
        with torch.profiler.profile(activities=cpu, record_shapes=args.shapes) as prof:
            for _ in range(args.profile):
                step(False)
        print(prof.key_averages(group_by_input_shape=args.shapes).table(sort_by="self_cpu_time_total", row_limit=30))


if __name__ == "__main__":
    main()
