"""Checks shared by the objective tests: two ways of computing one −ELBO agree in value and gradients."""

from __future__ import annotations

from collections.abc import Callable

import torch

Result = tuple[torch.Tensor, dict[str, torch.Tensor]]


def value_and_gradients(guide: torch.nn.Module, loss: Callable[[], torch.Tensor]) -> Result:
    """The loss's value and the gradient of every guide parameter, from a fresh backward pass."""
    guide.zero_grad()
    value = loss()
    value.backward()
    return value.detach(), {name: p.grad.clone() for name, p in guide.named_parameters()}


def assert_same_results(expected: Result, actual: Result, value_rtol: float, grad_rtol: float,
                        grad_atol: float) -> None:
    """``actual`` has ``expected``'s value (within ``value_rtol``, 1e-2 absolute) and gradients."""
    torch.testing.assert_close(actual[0], expected[0], rtol=value_rtol, atol=1e-2)
    for name, grad in expected[1].items():
        torch.testing.assert_close(actual[1][name], grad, rtol=grad_rtol, atol=grad_atol, msg=name)


def assert_same_objective(guide: torch.nn.Module, reference: Callable[[], torch.Tensor],
                          other: Callable[[], torch.Tensor], value_rtol: float, grad_rtol: float,
                          grad_atol: float) -> None:
    """``other`` computes ``reference``'s objective: the same value and gradients (:func:`assert_same_results`)."""
    assert_same_results(value_and_gradients(guide, reference), value_and_gradients(guide, other), value_rtol,
                        grad_rtol, grad_atol)
