"""Baseline output-perturbation defenses: none, top-1 only, rounding, reverse sigmoid, Gaussian noise.

Each is a frozen dataclass validated on construction; the ones with a strength (rounding decimals aside)
equal the undefended model at strength 0.

Example:
    >>> import torch
    >>> logits = torch.tensor([[3.0, 1.0, 0.0]])
    >>> x, phi = torch.zeros(1, 1, 2, 2), torch.zeros(1, 4)
    >>> TopOneDefense().answer(x, logits, phi, "c").tolist()
    [[1.0, 0.0, 0.0]]
    >>> [round(v, 4) for v in RoundingDefense(decimals=1).answer(x, logits, phi, "c")[0].tolist()]
    [0.8, 0.1, 0.0]
    >>> torch.allclose(ReverseSigmoidDefense(beta=0.0).answer(x, logits, phi, "c"), logits.softmax(1))
    True
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field
from typing import Any

import torch

from modelshield.defense.base import Defense
from modelshield.defense.policy import ClientPolicy
from modelshield.errors import ConfigError

__all__ = ["GaussianNoiseDefense", "NoDefense", "ReverseSigmoidDefense", "RoundingDefense", "TopOneDefense"]


@dataclass(frozen=True)
class NoDefense(Defense):
    """The undefended model: ``softmax(logits)``."""

    name = "none"

    def answer(self, x: torch.Tensor, logits: torch.Tensor, features: torch.Tensor, client_id: str,
               policy: ClientPolicy | None = None) -> torch.Tensor:
        return torch.softmax(logits.float(), dim=1)


@dataclass(frozen=True)
class TopOneDefense(Defense):
    """Only the top-1 label, as a one-hot vector."""

    name = "top1"

    def answer(self, x: torch.Tensor, logits: torch.Tensor, features: torch.Tensor, client_id: str,
               policy: ClientPolicy | None = None) -> torch.Tensor:
        out = torch.zeros_like(logits, dtype=torch.float32)
        return out.scatter_(1, logits.argmax(dim=1, keepdim=True), 1.0)


@dataclass(frozen=True)
class RoundingDefense(Defense):
    """Probabilities rounded to ``decimals`` decimal places (rows may then not sum exactly to 1).

    Attributes:
        decimals: decimal places kept (1 in the QUEEN paper's comparison).
    """

    decimals: int = 1
    name = "rounding"

    def __post_init__(self) -> None:
        if not 0 <= self.decimals <= 8:
            raise ConfigError(f"rounding decimals must be in 0..8, got {self.decimals}")

    def answer(self, x: torch.Tensor, logits: torch.Tensor, features: torch.Tensor, client_id: str,
               policy: ClientPolicy | None = None) -> torch.Tensor:
        return torch.round(torch.softmax(logits.float(), dim=1), decimals=self.decimals)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "decimals": self.decimals}


@dataclass(frozen=True)
class ReverseSigmoidDefense(Defense):
    """Reverse sigmoid (Lee et al. 2019): ``y' ∝ max(0, y - beta * (sigmoid(gamma * logit(y)) - 1/2))``.

    The perturbation is small for confident entries and large for small ones, which scrambles the
    relative order of the non-top classes that a soft-label pirate learns from.

    Attributes:
        beta: strength (0 = undefended).
        gamma: slope of the inner sigmoid.
    """

    beta: float = 0.7
    gamma: float = 0.4
    name = "reverse-sigmoid"

    def __post_init__(self) -> None:
        if not (self.beta >= 0 and math.isfinite(self.beta)):
            raise ConfigError(f"reverse sigmoid beta must be >= 0, got {self.beta}")
        if not (self.gamma > 0 and math.isfinite(self.gamma)):
            raise ConfigError(f"reverse sigmoid gamma must be > 0, got {self.gamma}")

    def answer(self, x: torch.Tensor, logits: torch.Tensor, features: torch.Tensor, client_id: str,
               policy: ClientPolicy | None = None) -> torch.Tensor:
        p = torch.softmax(logits.float(), dim=1)
        if self.beta == 0:
            return p
        clipped = p.clamp(1e-7, 1 - 1e-7)
        inverse = torch.log(clipped) - torch.log1p(-clipped)
        perturbed = (p - self.beta * (torch.sigmoid(self.gamma * inverse) - 0.5)).clamp_min(0.0)
        total = perturbed.sum(dim=1, keepdim=True)
        fallback = torch.zeros_like(p).scatter_(1, p.argmax(dim=1, keepdim=True), 1.0)
        return torch.where(total > 0, perturbed / total.clamp_min(1e-12), fallback)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "beta": self.beta, "gamma": self.gamma}


@dataclass(frozen=True)
class GaussianNoiseDefense(Defense):
    """Gaussian noise of standard deviation ``sigma`` added to the probabilities, clipped at 0, renormalised.

    Attributes:
        sigma: noise scale (0 = undefended).
        seed: seed of the defense's own random generator.
    """

    sigma: float = 0.1
    seed: int = 0
    name = "gaussian"
    _state: dict[str, Any] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not (self.sigma >= 0 and math.isfinite(self.sigma)):
            raise ConfigError(f"gaussian noise sigma must be >= 0, got {self.sigma}")
        self._state["generator"] = torch.Generator().manual_seed(self.seed)
        self._state["lock"] = threading.Lock()

    def answer(self, x: torch.Tensor, logits: torch.Tensor, features: torch.Tensor, client_id: str,
               policy: ClientPolicy | None = None) -> torch.Tensor:
        p = torch.softmax(logits.float(), dim=1)
        if self.sigma == 0:
            return p
        with self._state["lock"]:
            noise = torch.randn(p.shape, generator=self._state["generator"]) * self.sigma
        noisy = (p + noise).clamp_min(0.0)
        total = noisy.sum(dim=1, keepdim=True)
        fallback = torch.zeros_like(p).scatter_(1, p.argmax(dim=1, keepdim=True), 1.0)
        return torch.where(total > 0, noisy / total.clamp_min(1e-12), fallback)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "sigma": self.sigma, "seed": self.seed}
