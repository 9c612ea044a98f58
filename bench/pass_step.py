"""Training-step time with earlier forms of the likelihood pass (with the product that turns its gradient into
∂/∂w, and the special functions over distinct counts) against the code now, compiled in one process and timed
in turn.

    .venv/bin/python bench/pass_step.py                                   # 800 x 1000 x 12 set, 1 thread
    .venv/bin/python bench/pass_step.py --dataset 2000x3000x20 --steps 60
    .venv/bin/python bench/pass_step.py --forms log-alpha-per-element whole-array-value  # the log α change
    .venv/bin/python bench/pass_step.py --forms aten-special-functions now                # that change
    .venv/bin/python bench/pass_step.py --forms column-sums now --dataset hd_20000x5000x30 --threads 2 --steps 30
    .venv/bin/python bench/pass_step.py --forms aten-log now                              # the polynomial log
    .venv/bin/python bench/pass_step.py --forms gene-product now --dataset hd_20000x5000x30 --threads 2 --steps 30

Forms (``nb_likelihood.dense_terms``, ``_weights_gradient``, ``_gene_gradients`` and ``_count_terms`` as they
were):
  log-alpha-per-element  log α per (location, gene) entry, the value summed over the whole array, ∂/∂w as
                         (grad · m_g) @ g.T, ATen's lgamma and digamma over distinct counts (before commit ac41aa6)
  whole-array-value      log α per (batch, gene); the rest as above, the value being a second pass of
                         inductor's over (locations x genes) (ac41aa6 to 00b0d7f)
  aten-special-functions the value summed per row in the gradients' loop, ∂/∂w as (g @ (grad · m_g).T).T,
                         ATen's lgamma and digamma (00b0d7f to a5254a3)
  column-sums            m_g folded into the signatures for ∂/∂w, ((g · m_g) @ grad.T).T, so the pass writes one
                         (S, G) gradient, not two; log Γ and ψ over distinct counts from ``special_functions`` in
                         one compiled loop; ∂/∂m_g a column sum of grad · (w @ g) in the pass, ∂/∂s_eg a product of
                         the batches' one-hot with grad (a5254a3 to the commit after 75799e2)
  aten-log               ∂/∂m_g and ∂/∂s_eg from one product [wᵀ; one-hotᵀ] @ grad; ATen's (SLEEF's) log in the
                         pass (the package's code with torch.log for ``vector_log``; to the commit after f581232)
  gene-product           ``special_functions.polynomial_log`` in the compiled CPU pass; with one batch too, ∂/∂m_g
                         and ∂/∂s_eg from the one product of ``_gene_gradients`` (to the commit after bf7cb0a)
  now                    the package's: with one batch the pass returns ∂/∂m_g and ∂/∂s_eg from matrix-vector
                         products (``nb_likelihood.one_batch_terms``); with several, as gene-product

A dataset folder from run_benchmark.py is mapped in full batch; one from run_scale.py (``hd.h5ad``) gives its
first minibatch of ``--batch-size`` bins, the same one every step. Each step is a training step (loss, backward,
fused Adam, losses read every 50 steps). It also prints how far apart each form's outputs are from the last
one's on the same inputs, and how far each float32 value is from the same terms summed in float64.
"""

from __future__ import annotations

import argparse
import time
import types
from pathlib import Path

import torch
from minibatch_step import step_inputs as minibatch_step_inputs  # bench/, this script's folder
from profile_step import full_batch_step_inputs, training_step

from cell2location_nf.inference.allocator import retain_freed_memory
from cell2location_nf.inference.compile import CompiledOrEager
from cell2location_nf.models import nb_likelihood
from cell2location_nf.models.mapping_elbo import draw

HERE = Path(__file__).resolve().parent


def column_sum_pass(base, x, m_g, s_eg, y_s, alpha_eg, log_alpha_eg, batch_index, one_hot_t,
                    log_alpha_per_element: bool = False, whole_array_value: bool = False):
    """The pass from a5254a3 until ∂/∂m_g and ∂/∂s_eg came from one product: it also returns those two, from a
    column sum and a product with the one-hot. ``whole_array_value``: the value summed over the whole array with
    xlogy (before 00b0d7f); ``log_alpha_per_element``: log α per (location, gene) entry (before ac41aa6)."""
    linear = base * m_g + s_eg[batch_index]
    mu = linear * y_s
    alpha = alpha_eg[batch_index]
    log_alpha = torch.log(alpha) if log_alpha_per_element else log_alpha_eg[batch_index]
    total = alpha + mu
    log_total = torch.log(total)
    if whole_array_value:
        value = (alpha * log_alpha - (alpha + x) * log_total + torch.xlogy(x, mu)).sum()
    else:
        x_log_mu = torch.where(x > 0, x * torch.log(mu), 0)
        value = (alpha * log_alpha - (alpha + x) * log_total + x_log_mu).sum(dim=1).sum()
    ratio = (alpha + x) / total
    grad_mu = x / mu - ratio
    grad_alpha = one_hot_t @ (log_alpha + 1 - log_total - ratio)
    grad_y = (grad_mu * linear).sum(dim=1, keepdim=True)
    grad_linear = grad_mu * y_s
    grad_m = (grad_linear * base).sum(dim=0, keepdim=True)
    grad_s = one_hot_t @ grad_linear
    return value, grad_linear, grad_m, grad_s, grad_y, grad_alpha


def earlier_pass(log_alpha_per_element: bool):
    """The pass before the value change (whole-array value); with ``log_alpha_per_element`` also before commit
    ac41aa6. It returns ∂/∂(w @ g) times m_g, as every pass did before m_g was folded into the signatures."""

    def terms(base, x, m_g, *rest):
        value, grad_linear, *gradients = column_sum_pass(base, x, m_g, *rest, whole_array_value=True,
                                                         log_alpha_per_element=log_alpha_per_element)
        return value, grad_linear * m_g, *gradients

    return terms


def row_sum_pass(base, x, m_g, *rest):
    """The pass from 00b0d7f to a5254a3: as the column sums' pass, but returning ∂/∂(w @ g) times m_g."""
    value, grad_linear, *gradients = column_sum_pass(base, x, m_g, *rest)
    return value, grad_linear * m_g, *gradients


def with_gene_gradients(kernel):
    """An earlier pass, which returned ∂/∂m_g and ∂/∂s_eg itself, as the pass and ``_gene_gradients`` pair that
    ``nb_likelihood`` calls now: the pass's two gene gradients are handed on to the next gene-gradient call."""
    handed_on = []

    def likelihood_pass(use_compile, *inputs):
        value, grad, grad_m, grad_s, grad_y, grad_alpha = kernel(use_compile, *inputs)
        handed_on.append((grad_m, grad_s))
        return value, grad, grad_y, grad_alpha

    def gene_gradients(*_):
        return handed_on.pop()

    return likelihood_pass, gene_gradients


def earlier_weights_gradient(grad_base_m: torch.Tensor, cell_state: torch.Tensor, m_g: torch.Tensor) -> torch.Tensor:
    return grad_base_m @ cell_state.T


def transposed_weights_gradient(grad_base_m: torch.Tensor, cell_state: torch.Tensor, m_g: torch.Tensor):
    return (cell_state @ grad_base_m.T).T


def aten_count_terms(use_compile: bool, alpha_flat, distinct_batch_gene, x_u, n_u):
    """ATen's lgamma and digamma over distinct (batch, gene, count) triples, eagerly (before this form)."""
    y = x_u + alpha_flat.index_select(0, distinct_batch_gene)
    return (n_u * torch.lgamma(y)).sum(), n_u * torch.digamma(y)


def with_globals(fn, **names):
    """A copy of ``fn`` that reads ``names`` in place of the module globals of those names. Its code object is a
    copy too: torch.compile keeps what it compiled on the code object, together with the globals it was traced in."""
    return types.FunctionType(fn.__code__.replace(), {**fn.__globals__, **names}, fn.__name__, fn.__defaults__,
                              fn.__closure__)


def aten_log_form():
    """The package's pass as it was before the polynomial log: torch.log for vector_log."""
    return (CompiledOrEager(with_globals(nb_likelihood.dense_terms, vector_log=torch.log), "ATen-log pass"),
            nb_likelihood._gene_gradients, nb_likelihood._weights_gradient, nb_likelihood._count_terms, False)


def earlier_form(kernel, name, weights_gradient, count_terms):
    return (*with_gene_gradients(CompiledOrEager(kernel, name)), weights_gradient, count_terms, False)


def shipped_form(one_batch_pass: bool = True):
    """The package's pass, gene gradients, ∂/∂w and count terms; with or without its one-batch pass."""
    return (nb_likelihood._likelihood_pass, nb_likelihood._gene_gradients, nb_likelihood._weights_gradient,
            nb_likelihood._count_terms, one_batch_pass)


FORMS = {"log-alpha-per-element": lambda: earlier_form(earlier_pass(True), "log α per element",
                                                       earlier_weights_gradient, aten_count_terms),
         "whole-array-value": lambda: earlier_form(earlier_pass(False), "whole-array value",
                                                   earlier_weights_gradient, aten_count_terms),
         "aten-special-functions": lambda: earlier_form(row_sum_pass, "row-sum pass", transposed_weights_gradient,
                                                        aten_count_terms),
         "column-sums": lambda: earlier_form(column_sum_pass, "column-sum pass", nb_likelihood._weights_gradient,
                                             nb_likelihood._count_terms),
         "aten-log": aten_log_form,
         "gene-product": lambda: shipped_form(one_batch_pass=False),
         "now": shipped_form}


def use_form(form) -> None:
    (nb_likelihood._likelihood_pass, nb_likelihood._gene_gradients, nb_likelihood._weights_gradient,
     nb_likelihood._count_terms, nb_likelihood.ONE_BATCH_PASS) = form


def step_inputs(data: Path, batch_size: int):
    """(model, guide, step arguments): the full batch of a benchmark set, or a slide's first minibatch."""
    if (data / "hd.h5ad").exists():
        model, guide, loader = minibatch_step_inputs(data, batch_size)
        return model, guide, next(iter(loader(0)))
    trained, step_args = full_batch_step_inputs(data, torch.device("cpu"))
    return trained.model, trained.guide, step_args


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="800x1000x12")
    parser.add_argument("--workdir", type=Path, default=HERE / "work")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--steps", type=int, default=300, help="steps per round")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=5000, help="bins per minibatch of a run_scale.py slide")
    parser.add_argument("--forms", nargs="+", choices=list(FORMS), default=["aten-special-functions", "now"])
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    retain_freed_memory()  # as training does (inference/svi.py)

    model, guide, step_args = step_inputs(args.workdir / args.dataset, args.batch_size)
    shipped = FORMS["now"]()
    forms = {name: FORMS[name]() for name in args.forms}

    counts, idx = step_args[0], step_args[2]
    with torch.no_grad():
        z = {site: value[0] for site, value in draw(guide, idx).items()}
        alpha_eg = 1 / z["alpha_g_inverse"].pow(2)
        inputs = (z["w_sf"] @ model.cell_state, counts.x, z["m_g"], z["s_g_gene_add"], z["detection_y_s"], alpha_eg,
                  torch.log(alpha_eg), counts.batch_index, counts.batch_one_hot_t)
        outputs = {}
        for name, form in forms.items():
            use_form(form)
            value, grad, grad_y, grad_alpha, grad_m, grad_s = nb_likelihood.likelihood_terms(
                True, z["w_sf"], z["m_g"], z["s_g_gene_add"], z["detection_y_s"], alpha_eg, model.cell_state, counts)
            outputs[name] = (value, nb_likelihood._weights_gradient(grad, model.cell_state, z["m_g"]), grad_m, grad_s,
                             grad_y, grad_alpha)
        use_form(shipped)
        exact = float(earlier_pass(False)(*(t.double() if t.is_floating_point() else t for t in inputs))[0])
        print(f"value {exact:.3f} in float64; each form's float32 value minus it: " + ", ".join(
            f"{name} {float(outputs[name][0]) - exact:.3f}" for name in forms))
        last = args.forms[-1]
        names = ["value", "∂/∂w", "∂/∂m_g", "∂/∂s_eg", "∂/∂y_s", "∂/∂α_eg"]
        for name in args.forms[:-1]:
            print(f"largest absolute difference, {name} against {last}: " + ", ".join(
                f"{what} {float((a - b).abs().max()):.3g}"
                for what, a, b in zip(names, outputs[name], outputs[last], strict=True)))

    step = training_step(model, guide, step_args)
    times: dict[str, list[float]] = {name: [] for name in forms}
    try:
        for form in forms.values():  # compile each and warm up
            use_form(form)
            for _ in range(10):
                step()
        for _ in range(args.rounds):
            for name, form in forms.items():
                use_form(form)
                start = time.perf_counter()
                for _ in range(args.steps):
                    step()
                step.finish()
                times[name].append((time.perf_counter() - start) / args.steps * 1000)
    finally:
        use_form(shipped)
    print(f"\n{args.dataset}, {args.threads} thread(s), {args.rounds} rounds of {args.steps} steps in turn\n")
    print("| form | ms per step (rounds) | mean |\n|---|---|---|")
    for name, values in times.items():
        print(f"| {name} | {', '.join(f'{v:.2f}' for v in values)} | {sum(values) / len(values):.2f} |")


if __name__ == "__main__":
    main()
