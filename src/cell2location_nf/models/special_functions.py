"""log, and log Γ and ψ (digamma) together, in plain arithmetic that torch.compile vectorises.

ATen's ``lgamma`` and ``digamma`` evaluate one element at a time on a CPU (about 9 ns each), and inductor
calls the same scalar code; the likelihood needs both at every distinct (batch, gene, count) each step
(about 0.9 of an 11 ms step on 800 spots, bench/RESULTS.md "Vectorised log Γ and ψ"). Stirling's series after
shifting the argument up by ``SHIFT`` is a dozen vector operations instead.

Accuracy in float32 (``tests/test_special_functions.py``, against float64): ψ within a few units in the
last place, as ATen's float32 ψ; log Γ within 4·10⁻⁶ absolute below ``SHIFT`` (where the shift cancels)
and 3·10⁻⁷ relative above. Only ψ reaches the gradients; log Γ only the reported −ELBO.

The logarithm itself: inductor's CPU loops call SLEEF's vector log (1-ulp accuracy), and the likelihood pass
takes two per (location, gene) entry. :func:`polynomial_log` splits x into 2^e · m and takes log m from a
polynomial instead, in about 30 vector operations, within 1.2 units in the last place
(``tests/test_special_functions.py``; timings in bench/RESULTS.md, "A polynomial logarithm").
"""

from __future__ import annotations

import math

import torch

SHIFT = 6  # Stirling's series is accurate to float32 from here; below, Γ(y + 6) = Γ(y) y (y + 1) … (y + 5)


def polynomial_log(x: torch.Tensor) -> torch.Tensor:
    """Natural log of float32 ``x`` as e · ln 2 + log m, with x = 2^e · m and m in [√½, √2).

    Non-finite wherever ``torch.log`` is, so that a diverged run still shows as a non-finite loss: −∞ at 0, at
    negative x (torch.log: NaN) and below float32's smallest normal number (1.2·10⁻³⁸, where torch.log is finite
    but the likelihood already lost), NaN at NaN and at ±∞ (torch.log: +∞ at +∞). The constants are literals on
    purpose: torch.compile with dynamic shapes turns module-level floats into inputs of the kernel, loaded again
    for every vector.
    """
    # Subtracting the bits of √½ puts m in [√½, √2) and its exponent in e at once (0x3F3504F3 is √½ in float32).
    offset = x.view(torch.int32) - 0x3F3504F3
    exponent = (offset >> 23).to(x.dtype)
    t = ((offset & 0x007FFFFF) + 0x3F3504F3).view(torch.float32) - 1
    # log(1 + t) = t − t²/2 + t³ q(t) on t in [√½ − 1, √2 − 1]; q's coefficients, highest first, are a least-squares
    # fit of degree 7 to the relative error of log(1 + t) at 2,000 Chebyshev nodes
    q = -0.07362867871005499
    for coefficient in (0.12620327488819602, -0.1320210420898989, 0.14227114035882163, -0.16621369910234607,
                        0.1999982657295683, -0.25000851943543123, 0.3333335404727914):
        q = q * t + coefficient
    t2 = t * t
    # ln 2 = 0.693359375 (9 significant bits, so that e times it is exact) − 0.00021219444005471377
    log = exponent * 0.693359375 + ((t - 0.5 * t2 + t2 * t * q) - exponent * 0.00021219444005471377)
    return torch.where(x >= 2.0**-126, log, -math.inf) + (x - x)  # x − x: NaN at ±∞ and NaN, else 0


def vector_log(x: torch.Tensor) -> torch.Tensor:
    """log x: :func:`polynomial_log` while torch.compile traces float32 CPU code, else ``torch.log``: eagerly it
    would be a dozen passes over memory instead of one, and on a GPU (Triton) the pass is not bound by the log.
    Not differentiable by autograd (it reads x's bits): for code with hand-written gradients only."""
    if torch.compiler.is_compiling() and x.device.type == "cpu" and x.dtype == torch.float32:
        return polynomial_log(x)
    return torch.log(x)


def log_gamma_and_digamma(y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(log Γ(y), ψ(y)) for y > 0. Its logarithms are ``torch.log``: it runs over distinct counts, far fewer than
    the pass's entries, where the polynomial's longer compile would cost more than it saves."""
    small = y < SHIFT
    near = torch.clamp(y, max=SHIFT)  # keeps the unused shift terms of large y finite
    z = torch.where(small, y + SHIFT, y)
    inv_z = 1 / z
    inv_z2 = inv_z * inv_z
    log_z = torch.log(z)
    # 0.9189385332046727 = ½ log 2π, a literal: see polynomial_log
    log_gamma = (z - 0.5) * (log_z - 1) - 0.5 + 0.9189385332046727 \
        + inv_z * (1 / 12 - inv_z2 * (1 / 360 - inv_z2 * (1 / 1260)))
    digamma = log_z - 0.5 * inv_z - inv_z2 * (1 / 12 - inv_z2 * (1 / 120 - inv_z2 * (1 / 252)))
    product, reciprocals = near, 1 / near
    for k in range(1, SHIFT):
        product = product * (near + k)
        reciprocals = reciprocals + 1 / (near + k)
    return (torch.where(small, log_gamma - torch.log(product), log_gamma),
            torch.where(small, digamma - reciprocals, digamma))
