"""log Γ and ψ (digamma) together, in plain arithmetic and logarithms that torch.compile vectorises.

ATen's ``lgamma`` and ``digamma`` evaluate one element at a time on a CPU (about 9 ns each), and inductor
calls the same scalar code; the likelihood needs both at every distinct (batch, gene, count) each step
(about 0.9 of an 11 ms step on 800 spots, bench/RESULTS.md "Vectorised log Γ and ψ"). Stirling's series after
shifting the argument up by ``SHIFT`` is a dozen vector operations instead.

Accuracy in float32 (``tests/test_special_functions.py``, against float64): ψ within a few units in the
last place, as ATen's float32 ψ; log Γ within 4·10⁻⁶ absolute below ``SHIFT`` (where the shift cancels)
and 3·10⁻⁷ relative above. Only ψ reaches the gradients; log Γ only the reported −ELBO.
"""

from __future__ import annotations

import math

import torch

SHIFT = 6  # Stirling's series is accurate to float32 from here; below, Γ(y + 6) = Γ(y) y (y + 1) … (y + 5)
HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


def log_gamma_and_digamma(y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(log Γ(y), ψ(y)) for y > 0."""
    small = y < SHIFT
    near = torch.clamp(y, max=SHIFT)  # keeps the unused shift terms of large y finite
    z = torch.where(small, y + SHIFT, y)
    inv_z = 1 / z
    inv_z2 = inv_z * inv_z
    log_z = torch.log(z)
    log_gamma = (z - 0.5) * (log_z - 1) - 0.5 + HALF_LOG_2PI \
        + inv_z * (1 / 12 - inv_z2 * (1 / 360 - inv_z2 * (1 / 1260)))
    digamma = log_z - 0.5 * inv_z - inv_z2 * (1 / 12 - inv_z2 * (1 / 120 - inv_z2 * (1 / 252)))
    product, reciprocals = near, 1 / near
    for k in range(1, SHIFT):
        product = product * (near + k)
        reciprocals = reciprocals + 1 / (near + k)
    return (torch.where(small, log_gamma - torch.log(product), log_gamma),
            torch.where(small, digamma - reciprocals, digamma))
