"""MGDA's min-norm weights against the two-task closed form and a brute-force search."""

from __future__ import annotations

import itertools

import torch

from modelshield.watermark import min_norm_weights


def _closed_form(g1: torch.Tensor, g2: torch.Tensor) -> float:
    diff = g1 - g2
    return float(torch.clamp(((g2 - g1) @ g2) / (diff @ diff), 0.0, 1.0))


def test_two_tasks_match_closed_form() -> None:
    gen = torch.Generator().manual_seed(0)
    for _ in range(50):
        g = torch.randn(2, 6, generator=gen) * torch.rand(2, 1, generator=gen) * 3
        w = min_norm_weights(g)
        assert abs(float(w[0]) - _closed_form(g[0], g[1])) < 1e-5
        assert abs(float(w.sum()) - 1.0) < 1e-6


def test_two_tasks_pointing_the_same_way_take_the_shorter() -> None:
    g = torch.tensor([[1.0, 0.0], [3.0, 0.0]])
    assert min_norm_weights(g).tolist() == [1.0, 0.0]


def test_three_tasks_reach_the_min_norm() -> None:
    gen = torch.Generator().manual_seed(1)
    for _ in range(10):
        g = torch.randn(3, 4, generator=gen)
        w = min_norm_weights(g, iterations=2000)
        best = min(float(((torch.tensor([a, b, 1 - a - b]) @ g)).norm())
                   for a, b in itertools.product(torch.linspace(0, 1, 101).tolist(), repeat=2) if a + b <= 1)
        assert float((w @ g).norm()) <= best + 1e-3
