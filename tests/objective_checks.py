"""Checks shared by the objective tests: two ways of computing one −ELBO agree in value and gradients."""

from __future__ import annotations

from collections.abc import Callable

import torch


def value_and_gradients(guide: torch.nn.Module, loss: Callable[[], torch.Tensor]):
    """The loss's value and the gradient of every guide parameter, from a fresh backward pass."""
    guide.zero_grad()
    value = loss()
    value.backward()
    return value.detach(), {name: p.grad.clone() for name, p in guide.named_parameters()}


def assert_same_objective(guide: torch.nn.Module, reference: Callable[[], torch.Tensor],
                          other: Callable[[], torch.Tensor], value_rtol: float, grad_tol: float) -> None:
    """``other`` gives ``reference``'s value (within ``value_rtol``, 1e-2 absolute) and gradients."""
    expected, expected_grads = value_and_gradients(guide, reference)
    actual, actual_grads = value_and_gradients(guide, other)
    torch.testing.assert_close(actual, expected, rtol=value_rtol, atol=1e-2)
    for name, grad in expected_grads.items():
        torch.testing.assert_close(actual_grads[name], grad, rtol=grad_tol, atol=grad_tol, msg=name)
