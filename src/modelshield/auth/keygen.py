"""Key generation: optimise a mask and offset that switch the authentication bits on and nothing else.

For each batch of (normalised) training images ``z`` the loss is::

    MSE(|g(key(z)) - g(z)|, t)  (+ mask_l1 * mean(m))

where ``g`` is the per-image, per-channel spatial mean of the gate activations and ``t`` holds
``gamma * a_max`` at the bits and 0 elsewhere. The raw mask ``M`` and the offset ``P`` take signed-gradient
steps (``eps_mask``, ``eps_offset``) and are clipped to [0, 0.5] and [-theta, theta] after every step.

Decision (documented deviation from the released code): the target is *per image*. The released code sums
``g`` over the batch, which turns the per-image target into ``gamma * a_max / batch`` and ties the key to
the batch size; we average the squared error over images and channels instead, so ``t`` means the same
thing for every batch size.

Starting point (not fixed by the paper). ``start="identity"`` (default) begins at the identity key
(``M = 0``, so ``m`` ~ 0.0003, and a small random offset) and lets the signed-gradient steps grow the mask
only where it helps the objective: the key is a structured pattern, far from the i.i.d. noise of uniformly
random keys, which makes it easy for the tail to tell apart. ``start="random"`` begins at a key drawn
uniformly in the key space (``m`` ~ U[0, 0.5], ``P`` ~ U[-theta, theta]); with the released step sizes
such a key barely moves from its start and stays noise-like.

Reach of the key space (measured, LeNet-5 / MNIST, gate ``body.pool1``). With ``theta = 0.5`` in
normalised space a key can only paint a faint grey (MNIST's normalised range is [-0.42, 2.82]), so the
target ``gamma * a_max`` is out of reach: after 300 steps the bits rise by about 1-2 standard deviations of
their natural spread (+0.05 to +0.12 against a target of +1.7) while the other channels move by less than
a quarter of one. The loss still pulls the bits up as far as the key space allows, and the tail learns the
key's signature from that. With the released step sizes and one epoch of a few thousand images (about 20
steps) the bits barely move at all (+0.02): too few steps, which is why the defaults take more.

The bound is a config field (``theta``) and part of the per-architecture recipe. LeNet-5 takes 1.0: on MNIST's
validation split (default recipe, 10 random and 10 independently generated keys, mean / worst; with the key) 0.5
gave random keys 16.1% / 29.5% and independent keys 7.5% / 14.2% (98.04%), 1.0 gave 2.7% / 3.3% and 2.2% / 3.0%
(98.30%), 2.0 3.6% / 4.9% and 2.8% / 3.1% (98.28%): its 6-channel gate needs a key that moves it further than
noise does. Those are the embedding's seed 0; on seeds 1 and 2 1.0 was still the better value (no key 22.1% and
2.9% against 98.4% and 84.5% at 0.5) but did not keep independently generated keys out (README, seed fragility). On the deeper 64-channel gates of the small VGG and ResNet-20 a wider key space helped the keys an
attacker generates more than the owner's (validation, independent keys worst / mean, 4 N bit pool: VGG 78.6% /
23.5% at 1.0; ResNet-20 44.4% / 15.9% at 1.0 against 29.1% / 14.7% at 0.5), so they keep the paper's 0.5.

The seed is drawn from the operating system's CSPRNG unless given: two keys generated independently differ.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass, field

import torch
from torch import nn

from modelshield.auth.bits import AuthBits, gate_channel_mean
from modelshield.auth.gate import gate_output
from modelshield.auth.key import DEFAULT_THETA, MASK_MAX, AuthKey, mask_from_raw, raw_from_mask
from modelshield.data.types import Normalization
from modelshield.errors import ConfigError
from modelshield.training import make_progress

__all__ = ["KeyGenConfig", "KeyGenResult", "generate_key", "key_effect"]


@dataclass(frozen=True)
class KeyGenConfig:
    """Hyperparameters of key generation.

    The defaults are this library's recipe (identity start, about 150 steps on 2,000 images); the released
    VGG13 key's settings are :meth:`released`.

    Attributes:
        epochs: passes over the images (``E_key``).
        batch_size: images per step.
        eps_mask: signed-gradient step on the raw mask ``M``.
        eps_offset: signed-gradient step on the offset ``P``.
        theta: bound on the offset ``P`` in normalised space (the key space's reach). None (default) = the
            architecture's (:meth:`AuthConfig.for_model <modelshield.auth.AuthConfig.for_model>`: LeNet-5 1.0, else the
            paper's 0.5, :data:`~modelshield.auth.key.DEFAULT_THETA`); :func:`generate_key` called directly takes 0.5.
        mask_l1: weight of the optional ``mean(m)`` penalty (smaller masks).
        balance: weigh the bit channels and the other channels equally in the loss (else per channel).
        start: ``"identity"`` (default) or ``"random"`` (see the module docstring).
        support: share of the pixels the mask may use, a secret random subset drawn from the key's seed
            (default 0.125; 1 = every pixel, the paper's key space). Keys generated independently then use
            different pixels, not only different bits; elsewhere the mask stays at its minimum (``m`` ~ 0.0003).
            Chosen on MNIST's validation split (LeNet-5, default recipe, 10 keys generated independently, worst /
            mean accuracy; with the key): support 1 let the keys that drew the real key's two bits in (98.3% /
            21.4%; 98.44%), 0.5 too (89.4% / 19.7%; 98.42%), 0.25 nearly kept them out (23.6% / 9.3%; 98.10%),
            0.125 did (15.7% / 6.4%; 98.16%), with random keys at 5.9-17.2% (1: 3.5-3.6%).
        seed: seed of the random start; None draws one from the OS CSPRNG (use None for real keys).

    Example:
        >>> KeyGenConfig.released().epochs, KeyGenConfig().start
        (1, 'identity')
    """

    epochs: int = 5
    batch_size: int = 64
    eps_mask: float = 0.02
    eps_offset: float = 0.01
    theta: float | None = None
    mask_l1: float = 0.0
    balance: bool = True
    start: str = "identity"
    support: float = 0.125
    seed: int | None = None

    @classmethod
    def released(cls, seed: int | None = None) -> KeyGenConfig:
        """The released VGG13 / CIFAR-10 key's settings: 1 epoch, batch 256, eps 0.01 / 0.003, random start, every pixel."""
        return cls(epochs=1, batch_size=256, eps_mask=0.01, eps_offset=0.003, theta=DEFAULT_THETA, start="random",
                   support=1.0, seed=seed)

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1:
            raise ConfigError(f"key generation needs epochs >= 1 and batch_size >= 1, got {self.epochs}, {self.batch_size}")
        if not (self.eps_mask > 0 and self.eps_offset > 0):
            raise ConfigError(f"eps_mask and eps_offset must be > 0, got {self.eps_mask}, {self.eps_offset}")
        if self.theta is not None and not 0 < self.theta <= 10:
            raise ConfigError(f"theta must be in (0, 10], got {self.theta}")
        if self.start not in ("random", "identity"):
            raise ConfigError(f"start must be 'random' or 'identity', got {self.start!r}")
        if not 0 < self.support <= 1:
            raise ConfigError(f"support must be in (0, 1], got {self.support}")
        if self.mask_l1 < 0:
            raise ConfigError(f"mask_l1 must be >= 0, got {self.mask_l1}")


@dataclass(frozen=True)
class KeyGenResult:
    """A generated key and how well it does its job.

    Attributes:
        key: the key (not yet bound to a model fingerprint).
        bit_change: mean change of the bit channels' ``g`` on the generation data (target ``bits.target``).
        other_change: mean absolute change of the other channels' ``g``.
        mask_mean: mean of the effective mask ``m``.
        history: per-epoch mean loss.
        seconds: wall time.
    """

    key: AuthKey
    bit_change: float
    other_change: float
    mask_mean: float
    history: list[float] = field(default_factory=list)
    seconds: float = 0.0


def _keyed_raw(z: torch.Tensor, mask_raw: torch.Tensor, offset: torch.Tensor, norm: Normalization) -> torch.Tensor:
    m = mask_from_raw(mask_raw)
    return norm.invert((1 - m) * z + m * offset)


def generate_key(model: nn.Module, gate: str, x: torch.Tensor, bits: AuthBits, normalization: Normalization,
                 config: KeyGenConfig | None = None, *, progress: bool = False) -> KeyGenResult:
    """Optimise an :class:`AuthKey` that raises ``bits`` at ``gate`` by their target and leaves the rest.

    Args:
        model: the (trained) model; put in eval mode, its weights are not changed.
        gate: gate module name.
        x: raw training images (N, C, H, W).
        bits: the authentication bits and targets.
        normalization: the model's input statistics (the key lives in normalised space).
        config: hyperparameters.
        progress: show a progress bar.
    """
    config = config or KeyGenConfig()
    theta = config.theta if config.theta is not None else DEFAULT_THETA
    if x.dim() != 4 or len(x) == 0:
        raise ConfigError(f"key generation needs a non-empty NCHW batch, got shape {tuple(x.shape)}")
    start = time.perf_counter()
    seed = config.seed if config.seed is not None else secrets.randbits(63)
    gen = torch.Generator().manual_seed(int.from_bytes(hashlib.sha256(f"modelshield-auth-key:{seed}".encode()).digest()[:8], "little") >> 1)
    c, h, w = x.shape[1:]
    if config.start == "identity":
        mask_raw = torch.zeros(1, h, w).requires_grad_(True)
        offset = ((torch.rand(c, h, w, generator=gen) * 2 - 1) * theta * 0.1).requires_grad_(True)
    else:
        mask_raw = raw_from_mask(torch.rand(1, h, w, generator=gen) * MASK_MAX).requires_grad_(True)
        offset = ((torch.rand(c, h, w, generator=gen) * 2 - 1) * theta).requires_grad_(True)
    outside = None
    if config.support < 1:
        outside = torch.rand(1, h, w, generator=gen) >= config.support
        with torch.no_grad():
            mask_raw[outside] = 0.0
    target = bits.target_vector()
    on = target > 0
    weight = torch.full_like(target, 1.0 / target.numel())
    if config.balance and bool((~on).any()):
        weight[on] = 0.5 / int(on.sum())
        weight[~on] = 0.5 / int((~on).sum())
    model.eval()
    params = [p for p in model.parameters()]
    saved_flags = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(False)
    history: list[float] = []
    try:
        steps = (len(x) + config.batch_size - 1) // config.batch_size
        with make_progress(progress) as bar:
            task = bar.add_task("auth: key", total=config.epochs * steps, status="")
            for _epoch in range(config.epochs):
                order = torch.randperm(len(x), generator=gen)
                total = 0.0
                for i in range(0, len(x), config.batch_size):
                    batch = x[order[i : i + config.batch_size]]
                    z = normalization.apply(batch)
                    with torch.no_grad():
                        g0 = gate_channel_mean(gate_output(model, gate, batch))
                    g1 = gate_channel_mean(gate_output(model, gate, _keyed_raw(z, mask_raw, offset, normalization)))
                    loss = ((g1 - g0 - target).pow(2) * weight).sum(dim=1).mean()
                    if config.mask_l1:
                        loss = loss + config.mask_l1 * mask_from_raw(mask_raw).mean()
                    grad_m, grad_p = torch.autograd.grad(loss, [mask_raw, offset])
                    with torch.no_grad():
                        mask_raw.sub_(config.eps_mask * grad_m.sign()).clamp_(0.0, MASK_MAX)
                        if outside is not None:
                            mask_raw[outside] = 0.0
                        offset.sub_(config.eps_offset * grad_p.sign()).clamp_(-theta, theta)
                    total += float(loss.detach()) * len(batch)
                    bar.advance(task)
                history.append(total / len(x))
                bar.update(task, status=f"loss {history[-1]:.4f}")
    finally:
        for p, flag in zip(params, saved_flags):
            p.requires_grad_(flag)
    key = AuthKey(mask_raw.detach(), offset.detach(), normalization, gate, bits=bits.channels, theta=theta)
    bit_change, other_change = key_effect(model, key, x[: min(len(x), 2048)], bits)
    return KeyGenResult(key, bit_change, other_change, float(key.mask.mean()), history, time.perf_counter() - start)


@torch.no_grad()
def key_effect(model: nn.Module, key: AuthKey, x: torch.Tensor, bits: AuthBits, batch_size: int = 512) -> tuple[float, float]:
    """(mean change of the bit channels, mean absolute change of the other channels) of ``g`` under ``key``."""
    model.eval()
    diffs = []
    for i in range(0, len(x), batch_size):
        batch = x[i : i + batch_size]
        diffs.append(gate_channel_mean(gate_output(model, key.gate, key.apply(batch)))
                     - gate_channel_mean(gate_output(model, key.gate, batch)))
    d = torch.cat(diffs)
    on = torch.zeros(d.shape[1], dtype=torch.bool)
    on[list(bits.channels)] = True
    other = float(d[:, ~on].abs().mean()) if (~on).any() else 0.0
    return float(d[:, on].mean()), other
