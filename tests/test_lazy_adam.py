"""LazyRowAdam: Adam's update when every row has a gradient; rows outside the minibatch stay put."""

from __future__ import annotations

import torch

from cell2location_nf.inference.lazy_adam import LazyRowAdam


def _gradients(steps: int, shape: tuple[int, ...], seed: int = 0) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(shape, generator=gen) for _ in range(steps)]


def _run(optimizer: torch.optim.Optimizer, params: list[torch.Tensor], grads: list[list[torch.Tensor]]) -> None:
    for step_grads in grads:
        for p, g in zip(params, step_grads, strict=True):
            p.grad = g.clone()
        optimizer.step()


def test_full_gradients_give_torch_adams_update():
    local, glob = torch.zeros(6, 3, requires_grad=True), torch.zeros(1, 4, requires_grad=True)
    ref_local, ref_glob = (t.detach().clone().requires_grad_() for t in (local, glob))
    grads = list(zip(_gradients(20, (6, 3)), _gradients(20, (1, 4), seed=1), strict=True))
    _run(LazyRowAdam([{"params": [glob]}, {"params": [local], "lazy": True}], lr=0.05), [local, glob], grads)
    _run(torch.optim.Adam([ref_local, ref_glob], lr=0.05), [ref_local, ref_glob], grads)
    torch.testing.assert_close(local, ref_local, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(glob, ref_glob, rtol=1e-5, atol=1e-6)


def test_rows_outside_the_minibatch_keep_parameters_and_moments():
    local = torch.zeros(4, 2, requires_grad=True)
    optimizer = LazyRowAdam([{"params": [local], "lazy": True}], lr=0.1)
    grads = []
    for step in range(6):  # rows 0-1 in every step; row 2 only in the last; row 3 never
        g = torch.zeros(4, 2)
        g[:2] = 1.0
        if step == 5:
            g[2] = -1.0
        grads.append([g])
    _run(optimizer, [local], grads[:5])
    assert torch.equal(local[2:], torch.zeros(2, 2))
    moments = {k: optimizer.state[local][k].clone() for k in ("exp_avg", "exp_avg_sq", "step")}
    assert torch.equal(moments["exp_avg"][2:], torch.zeros(2, 2)) and moments["step"][2:].eq(0).all()
    _run(optimizer, [local], grads[5:])
    # row 2's first step is a first Adam step: lr times the gradient's sign, despite five earlier steps
    torch.testing.assert_close(local[2], torch.full((2,), 0.1), rtol=1e-5, atol=1e-7)
    assert torch.equal(local[3], torch.zeros(2)) and optimizer.state[local]["step"][3].item() == 0
    assert optimizer.state[local]["step"][0].item() == 6


def test_state_round_trips_through_a_checkpoint():
    grads = [[g] for g in _gradients(8, (5, 2))]
    for g in grads:
        g[0][::2] = 0  # half the rows outside every minibatch
    straight = torch.zeros(5, 2, requires_grad=True)
    _run(LazyRowAdam([{"params": [straight], "lazy": True}], lr=0.05), [straight], grads)

    resumed = torch.zeros(5, 2, requires_grad=True)
    first = LazyRowAdam([{"params": [resumed], "lazy": True}], lr=0.05)
    _run(first, [resumed], grads[:4])
    second = LazyRowAdam([{"params": [resumed], "lazy": True}], lr=0.05)
    second.load_state_dict(first.state_dict())
    _run(second, [resumed], grads[4:])
    assert torch.equal(straight, resumed)
