"""Authentication bits: the redundant (low-activation, but alive) gate channels the key switches on.

Over a dataset, in eval mode, ``a_c`` is the mean over images of the spatial mean of gate channel ``c``.
Channels are sorted by ``a_c`` ascending; dead channels (``a_c <= 0``) are skipped; the next ``N`` are the
bits. Each bit's target change is ``t_c = gamma * a_max`` (``a_max`` = the largest ``a_c``); every other
channel's target change is 0.

With ``pool > N`` the ``N`` bits are drawn at random (from the key's own randomness) among the ``pool``
lowest live channels instead of taking the lowest ``N``: a key generated independently then targets
different channels. ``pool = N`` is the paper's deterministic choice.

Example:
    >>> import torch
    >>> bits = select_bits(torch.tensor([0.0, 0.5, 0.1, 2.0, 0.3]), num_bits=2, gamma=2.0)
    >>> bits.channels, bits.a_max, bits.target_vector().tolist()
    ((2, 4), 2.0, [0.0, 0.0, 4.0, 0.0, 4.0])
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from modelshield.auth.gate import gate_output
from modelshield.errors import ConfigError

__all__ = ["AuthBits", "channel_means", "gate_channel_mean", "select_bits"]


def gate_channel_mean(activations: torch.Tensor) -> torch.Tensor:
    """``g``: per-image, per-channel spatial mean of gate activations ``(N, C, ...) -> (N, C)``.

    Example:
        >>> gate_channel_mean(torch.ones(2, 3, 4, 4)).shape
        torch.Size([2, 3])
    """
    return activations.flatten(2).mean(dim=2) if activations.dim() > 2 else activations


@torch.no_grad()
def channel_means(model: nn.Module, gate: str, x: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    """``a_c`` over a batch of raw images: mean over images of the spatial mean of each gate channel.

    The model is put in eval mode.
    """
    if len(x) == 0:
        raise ConfigError("channel_means needs at least one image")
    model.eval()
    total = None
    for start in range(0, len(x), batch_size):
        g = gate_channel_mean(gate_output(model, gate, x[start : start + batch_size])).sum(dim=0)
        total = g if total is None else total + g
    assert total is not None
    return total / len(x)


@dataclass(frozen=True)
class AuthBits:
    """The chosen authentication bits and their targets.

    Attributes:
        channels: indices of the bit channels (sorted).
        a_max: the largest channel mean ``a_c``.
        gamma: target multiplier.
        means: every channel's ``a_c`` (length = number of gate channels).
    """

    channels: tuple[int, ...]
    a_max: float
    gamma: float
    means: tuple[float, ...]

    @property
    def target(self) -> float:
        """Target change of each bit: ``gamma * a_max``."""
        return self.gamma * self.a_max

    def target_vector(self) -> torch.Tensor:
        """``t``: ``gamma * a_max`` at the bits, 0 elsewhere (one entry per gate channel)."""
        t = torch.zeros(len(self.means))
        t[list(self.channels)] = self.target
        return t


def select_bits(means: torch.Tensor, num_bits: int, gamma: float, *, pool: int | None = None,
                generator: torch.Generator | None = None) -> AuthBits:
    """Choose ``num_bits`` low-activation live channels.

    Args:
        means: ``a_c`` per channel (from :func:`channel_means`).
        num_bits: ``N``.
        gamma: target multiplier (> 0).
        pool: draw the bits at random among this many lowest live channels (default ``N``: the lowest ``N``).
        generator: randomness for the draw when ``pool > N``.

    Raises:
        ConfigError: bad counts, or fewer live channels than needed.
    """
    means = means.detach().float().flatten()
    pool = num_bits if pool is None else pool
    if num_bits < 1 or pool < num_bits:
        raise ConfigError(f"need 1 <= num_bits <= pool, got num_bits={num_bits}, pool={pool}")
    if not gamma > 0:
        raise ConfigError(f"gamma must be > 0, got {gamma}")
    order = torch.argsort(means, stable=True)
    live = [int(c) for c in order if float(means[c]) > 0.0]
    if len(live) < pool:
        raise ConfigError(f"the gate has {len(live)} live channels (a_c > 0) of {len(means)}; "
                          f"cannot choose {num_bits} bits from a pool of {pool}: lower num_bits/pool or move the gate")
    candidates = live[:pool]
    if pool > num_bits:
        pick = torch.randperm(pool, generator=generator)[:num_bits]
        chosen = sorted(candidates[int(i)] for i in pick)
    else:
        chosen = sorted(candidates)
    return AuthBits(tuple(chosen), float(means.max()), float(gamma), tuple(float(v) for v in means))
