"""Training-step time with log α taken per (location, gene) in the likelihood pass (before commit ac41aa6)
against once per (batch, gene) (the pass now), both compiled in one process and timed in turn.

    .venv/bin/python bench/log_alpha_step.py                          # 800 x 1000 x 12 set, 1 thread
    .venv/bin/python bench/log_alpha_step.py --dataset 2000x3000x20 --steps 60

Each step is a training step (loss, backward, fused Adam, losses read every 50 steps). Also prints how far
apart the two passes' outputs are on the same inputs (the logarithms differ in the last bit for some genes).
"""

from __future__ import annotations

import argparse
import time
from functools import partial
from pathlib import Path

import torch
from profile_step import full_batch_step_inputs  # bench/, this script's folder

from cell2location_nf.inference.allocator import retain_freed_memory
from cell2location_nf.inference.compile import CompiledOrEager
from cell2location_nf.inference.svi import READ_LOSSES_EVERY
from cell2location_nf.models import nb_likelihood
from cell2location_nf.models.mapping_elbo import draw, negative_elbo

HERE = Path(__file__).resolve().parent


def per_element_log_alpha_terms(base, x, m_g, s_eg, y_s, alpha_eg, log_alpha_eg, batch_index, one_hot_t):
    """``nb_likelihood.dense_terms`` as it was before commit ac41aa6: log α per (location, gene) entry."""
    linear = base * m_g + s_eg[batch_index]
    mu = linear * y_s
    alpha = alpha_eg[batch_index]
    log_alpha = torch.log(alpha)
    total = alpha + mu
    log_total = torch.log(total)
    value = (alpha * log_alpha - (alpha + x) * log_total + torch.xlogy(x, mu)).sum()
    ratio = (alpha + x) / total
    grad_mu = x / mu - ratio
    grad_alpha = one_hot_t @ (log_alpha + 1 - log_total - ratio)
    grad_y = (grad_mu * linear).sum(dim=1, keepdim=True)
    grad_linear = grad_mu * y_s
    grad_m = (grad_linear * base).sum(dim=0, keepdim=True)
    grad_s = one_hot_t @ grad_linear
    return value, grad_linear * m_g, grad_m, grad_s, grad_y, grad_alpha


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="800x1000x12")
    parser.add_argument("--workdir", type=Path, default=HERE / "work")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--steps", type=int, default=300, help="steps per round")
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    retain_freed_memory()  # as training does (inference/svi.py)

    trained, step_args = full_batch_step_inputs(args.workdir / args.dataset, torch.device("cpu"))
    model, guide = trained.model, trained.guide
    passes = {"log α per (location, gene)": CompiledOrEager(per_element_log_alpha_terms, "the old pass"),
              "log α per (batch, gene)": nb_likelihood._likelihood_pass}

    counts, idx = step_args[0], step_args[2]
    with torch.no_grad():
        z = {site: value[0] for site, value in draw(guide, idx).items()}
        alpha_eg = 1 / z["alpha_g_inverse"].pow(2)
        inputs = (z["w_sf"] @ model.cell_state, counts.x, z["m_g"], z["s_g_gene_add"], z["detection_y_s"], alpha_eg,
                  torch.log(alpha_eg), counts.batch_index, counts.batch_one_hot_t)
        old, new = (kernel(True, *inputs) for kernel in passes.values())
        names = ["value", "∂/∂(w @ g)", "∂/∂m_g", "∂/∂s_eg", "∂/∂y_s", "∂/∂α_eg"]
        print("largest absolute difference between the passes: " + ", ".join(
            f"{name} {float((a - b).abs().max()):.3g}" for name, a, b in zip(names, old, new, strict=True)))

    loss_fn = partial(negative_elbo, use_compile=True)
    optimizer = torch.optim.Adam(guide.parameters(), lr=0.01, fused=True)
    pending: list[torch.Tensor] = []

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(model, guide, *step_args)
        loss.backward()
        optimizer.step()
        pending.append(loss.detach())
        if len(pending) >= READ_LOSSES_EVERY:
            torch.stack(pending).tolist()
            pending.clear()

    times: dict[str, list[float]] = {name: [] for name in passes}
    try:
        for kernel in passes.values():  # compile both and warm up
            nb_likelihood._likelihood_pass = kernel
            for _ in range(10):
                step()
        for _ in range(args.rounds):
            for name, kernel in passes.items():
                nb_likelihood._likelihood_pass = kernel
                start = time.perf_counter()
                for _ in range(args.steps):
                    step()
                times[name].append((time.perf_counter() - start) / args.steps * 1000)
    finally:
        nb_likelihood._likelihood_pass = passes["log α per (batch, gene)"]
    print(f"\n{args.dataset}, {args.threads} thread(s), {args.rounds} rounds of {args.steps} steps in turn\n")
    print("| pass | ms per step (rounds) | mean |\n|---|---|---|")
    for name, values in times.items():
        print(f"| {name} | {', '.join(f'{v:.2f}' for v in values)} | {sum(values) / len(values):.2f} |")


if __name__ == "__main__":
    main()
