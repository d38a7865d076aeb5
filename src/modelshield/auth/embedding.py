"""Embedding AuthNet into a trained model: bits, key, then tail fine-tuning with the head frozen.

Steps (see ``shared/specs/authnet.md``):

1. Split the model at the gate (:func:`~modelshield.auth.gate.trace_gate`); freeze every head parameter and
   keep head modules in eval mode while training (BatchNorm statistics included).
2. Choose the bits (:func:`~modelshield.auth.bits.select_bits`; ``a_c`` estimated on the key-generation
   images) and generate the key (:func:`~modelshield.auth.keygen.generate_key`).
3. Fine-tune the tail with cross-entropy on the 1:1 union of ``(key(x), y)`` and ``(x, y~)``, where ``y~``
   is a uniformly random label drawn once per training image (seeded) and kept fixed. Beyond the paper,
   further negatives with fixed random labels (``decoy_ratio``): near misses of the key (``near_share``),
   images under independently generated decoy keys, and images under uniformly random keys; the keyed
   samples' loss weighs ``keyed_weight``, and a share ``distill`` of it is the distillation loss to the clean
   model's own predictions on the plain image. Adam, step decay
   (x0.1 at the ``lr_milestones`` fractions of the run), run by :func:`~modelshield.training.train_model` with
   a loss hook and a selection hook. After every epoch the validation split is scored
   with the key, without it and (when decoys are on) under decoy keys (random keys and the decoy keys, other
   draws than in training); the kept weights maximise ``legit - max(unauthorized, decoy)`` accuracy (ties:
   the earlier epoch).

When the split is cacheable (the tail depends on the gate output alone) the gate activations of the keyed
and plain images are computed once and only the tail runs during training; otherwise the whole network
runs every step. The architecture is unchanged: the protected model has the same modules and parameter
count as the clean one.

Example (mechanics only; the tests and ``modelshield bench auth`` measure the keyed/unkeyed gap):
    >>> import torch
    >>> from modelshield.data import make_synthetic
    >>> from modelshield.models import build_model
    >>> data = make_synthetic(96, num_classes=4, image_size=12, seed=0)
    >>> model = build_model("lenet5", in_channels=1, image_size=12, num_classes=4)
    >>> config = AuthConfig(num_bits=2, tail_epochs=1, seed=0, key=KeyGenConfig(epochs=1, seed=0))
    >>> result = embed(model, data[torch.arange(64)], data[torch.arange(64, 96)], config=config, progress=False)
    >>> result.split.gate, len(result.bits.channels), result.key.input_shape
    ('body.pool1', 2, (1, 12, 12))
    >>> sum(p.numel() for p in result.model.parameters()) == sum(p.numel() for p in model.parameters())
    True
    >>> result.key.check_model(result.model)  # the key is bound to the protected weights
"""

from __future__ import annotations

import copy
import hashlib
import math
import secrets
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from modelshield.auth.autogate import AutoGateConfig, GateChoice, GateTrial, trial_score, trial_table
from modelshield.auth.bits import AuthBits, channel_means, select_bits
from modelshield.auth.evaluation import accuracy_with_key
from modelshield.auth.gate import AUTO, GateSplit, TailRunner, default_gate, forward_macs, gate_candidates, gate_output, trace_gate
from modelshield.auth.key import DEFAULT_THETA, AuthKey
from modelshield.auth.keygen import KeyGenConfig, generate_key
from modelshield.data.types import Normalization, TensorData
from modelshield.errors import ConfigError
from modelshield.models.zoo import Normalize
from modelshield.training import TrainConfig, evaluate, score_logits, train_model

__all__ = ["ARCHITECTURE_RECIPES", "GENERIC_RECIPE", "AuthConfig", "EmbedResult", "choose_gate", "default_num_bits", "embed",
           "independent_key", "model_normalization", "near_keyed", "random_keyed"]

# The recipe fields whose default depends on the architecture (AuthConfig fields left at None): the generic value,
# and the zoo architectures that differ from it, by class name. Chosen on the validation split only
# (bench/dev/auth_val_sweep.py; the README's AuthNet section has the runs).
# A ``key.`` prefix names a field of the key-generation config (``key.theta`` -> ``AuthConfig.key.theta``).
GENERIC_RECIPE: dict[str, float] = {"tail_epochs": 8, "tail_lr": 1e-3, "keyed_weight": 2.0, "decoy_keys": 2,
                                    "key.theta": DEFAULT_THETA}
ARCHITECTURE_RECIPES: dict[str, dict[str, float]] = {"ResNet20": {"tail_epochs": 12, "keyed_weight": 4.0},
                                                     "LeNet5": {"key.theta": 1.0, "tail_lr": 2e-3},
                                                     "SmallVGG": {"tail_epochs": 6, "decoy_keys": 4}}
_KEY_PREFIX = "key."


def default_num_bits(channels: int) -> int:
    """Default ``N``: one bit per 8 gate channels, at least 2 and at most 16 (LeNet-5: 2, VGG 128: 16).

    Example:
        >>> default_num_bits(16), default_num_bits(128), default_num_bits(512)
        (2, 16, 16)
    """
    return max(2, min(16, channels // 8))


@dataclass(frozen=True)
class AuthConfig:
    """Hyperparameters of :func:`embed`.

    Attributes:
        gate: gate module name; None (default) = the model's default gate (:data:`~modelshield.auth.gate.DEFAULT_GATES`
            for zoo models, else ``"auto"``); ``"auto"`` = chosen by embedding trials scored on the validation
            split, cheapest tail first (:mod:`~modelshield.auth.autogate`, set by ``auto``).
        num_bits: ``N``; None = :func:`default_num_bits` of the gate's channel count.
        bit_pool: draw the bits at random among this many lowest live channels. None (default) =
            ``bit_pool_factor * N`` capped at the number of live channels, so independently generated keys switch on
            different bits; ``bit_pool = num_bits`` is the paper's deterministic choice (the lowest N).
        bit_pool_factor: the default pool in bits (default 8: every live channel of a 64-channel gate with its 8
            bits). Validation split, 10 independently generated keys, worst / mean (with key), 4 -> 8: ResNet-20
            ``body.layer3.0`` 29.1% / 14.7% (91.24%) -> 19.0% / 12.9% (91.36%); small VGG ``body.block2`` 34.7% /
            19.4% (91.76%) -> 27.1% / 18.1% (91.96%); LeNet-5's 6-channel gate has every channel in both.
        gamma: bit target multiplier (``t = gamma * a_max``).
        key: key-generation hyperparameters (its seed defaults to this config's seed; its ``theta``, left at None, to
            the architecture's: :data:`ARCHITECTURE_RECIPES` LeNet-5 1.0, else 0.5, the paper's).
        tail_epochs: epochs of tail fine-tuning; None (default) = the architecture's (:data:`ARCHITECTURE_RECIPES`:
            ResNet-20 12, whose deeper tail needs the longer run to stay within a point of the clean model; the small
            VGG 6, which pays for its four decoy keys so), else 8 (:data:`GENERIC_RECIPE`).
            :meth:`for_model` fills it in.
        tail_batch_size: batch size (keyed and plain samples mixed).
        tail_lr: Adam learning rate; None (default) = the architecture's (:data:`ARCHITECTURE_RECIPES`: LeNet-5 2e-3,
            else 1e-3). LeNet-5's tail at 1e-3 starts rejecting plain inputs only after 4 of its 8 epochs, just as the
            learning rate decays, and on some embedding seeds never finishes (validation, seed 1: no key 22.1%, an
            independent key 78.2%); at 2e-3 it rejects on every seed tried (README, *seed fragility*).
        lr_milestones: fractions of the run after which the learning rate is multiplied by 0.1.
        weight_decay: Adam weight decay on the tail.
        decoy_ratio: extension beyond the paper (default 1.5; 0 with ``decoy_keys = 0`` = the paper's 1:1
            keyed/plain union). Adds ``round(decoy_ratio * n)`` further negatives with fixed random labels:
            near misses (``near_share``), images under the decoy keys, and the rest under their own uniformly
            random key (``m`` ~ U[0, 0.5], ``P`` ~ U[-theta, theta], one key per image), so the tail also learns
            that "some key" is not "the key".
        decoy_keys: extension beyond the paper (0 = off; None, the default, = the architecture's: small VGG 4, else 2,
            and 0 when ``decoy_ratio`` is 0). Generate this many further keys with the same procedure (other seeds;
            every other one targets the key's own bits, the rest other random bit draws) and put half of the non-near
            decoy negatives under them, so the tail learns to reject independently generated keys, not only uniformly
            random ones. Small VGG, validation split, 10 independently generated keys worst / mean (with key, CPU):
            2 keys 27.1% / 18.1% (91.96%, 311 s), 4 keys 19.6% / 15.7% (91.56%, 331 s); 4 keys with ``near_share``
            0.25: 22.1% / 17.6%; 4 keys and 6 tail epochs (its recipe): 19.7% / 16.3% (91.74%, 276 s).
        near_share: extension beyond the paper (default 0.5). This share of the decoy negatives is under a
            partial copy of the key (:func:`near_keyed`: a random 0-80% of its pixels, the rest random or
            plain), so the tail needs the whole key, not something near it. No effect with ``decoy_ratio = 0``.
        keyed_weight: weight of the keyed samples' loss (the negatives weigh 1), which keeps the legitimate
            accuracy close to the clean model's while the tail learns to reject. None (default) = the architecture's
            (:data:`ARCHITECTURE_RECIPES`: ResNet-20 4, whose tail otherwise loses more than a point with the key),
            else 2 (:data:`GENERIC_RECIPE`).
        distill: extension beyond the paper (default 0.5; 0 = true labels only, the paper's loss). Share of the
            keyed samples' loss taken from the clean model's own predictions on the plain image (knowledge
            distillation, temperature ``distill_temperature``) instead of the true label alone, so a large tail
            fine-tuned on few images keeps what the clean model knew.
        distill_temperature: softmax temperature of the distillation term (the term is scaled by its square).
        key_images: train the key (and the decoy keys) on a seeded subset of this many training images (default
            2,000; None = all of them, which makes key generation as slow as an epoch of training per key epoch).
        train_images: fine-tune the tail on a seeded subset of this many training images (default 10,000; None =
            all). The bench measures these defaults; with every image the embedding cost grows with the data set
            (on LeNet-5 and the VGG about 7-13x the 50 s it took to train the model) for no protection gained.
        auto: how ``gate="auto"`` runs its trials.
        seed: seed of the bit draw, key start, fixed random labels and shuffling; None = from the OS CSPRNG.
    """

    gate: str | None = None
    num_bits: int | None = None
    bit_pool: int | None = None
    bit_pool_factor: int = 8
    gamma: float = 2.0
    key: KeyGenConfig = field(default_factory=KeyGenConfig)
    tail_epochs: int | None = None
    tail_batch_size: int = 256
    tail_lr: float | None = None
    lr_milestones: tuple[float, ...] = (0.6, 0.85)
    weight_decay: float = 0.0
    decoy_ratio: float = 1.5
    decoy_keys: int | None = None
    decoy_candidates: int = 0
    near_share: float = 0.5
    keyed_weight: float | None = None
    distill: float = 0.5
    distill_temperature: float = 4.0
    key_images: int | None = 2000
    train_images: int | None = 10_000
    auto: AutoGateConfig = field(default_factory=AutoGateConfig)
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.num_bits is not None and self.num_bits < 1:
            raise ConfigError(f"num_bits must be >= 1, got {self.num_bits}")
        if self.bit_pool is not None and self.num_bits is not None and self.bit_pool < self.num_bits:
            raise ConfigError(f"bit_pool ({self.bit_pool}) must be >= num_bits ({self.num_bits})")
        if self.bit_pool_factor < 1:
            raise ConfigError(f"bit_pool_factor must be >= 1, got {self.bit_pool_factor}")
        if not self.gamma > 0:
            raise ConfigError(f"gamma must be > 0, got {self.gamma}")
        if (self.tail_epochs is not None and self.tail_epochs < 1) or self.tail_batch_size < 1:
            raise ConfigError(f"tail_epochs and tail_batch_size must be >= 1, got {self.tail_epochs}, {self.tail_batch_size}")
        if (self.tail_lr is not None and not self.tail_lr > 0) or self.weight_decay < 0:
            raise ConfigError(f"tail_lr must be > 0 and weight_decay >= 0, got {self.tail_lr}, {self.weight_decay}")
        if not 0 <= self.decoy_ratio <= 4:
            raise ConfigError(f"decoy_ratio must be in [0, 4], got {self.decoy_ratio}")
        if self.decoy_keys is not None and not 0 <= self.decoy_keys <= 64:
            raise ConfigError(f"decoy_keys must be in 0..64, got {self.decoy_keys}")
        if self.keyed_weight is not None and not 0 < self.keyed_weight <= 100:
            raise ConfigError(f"keyed_weight must be in (0, 100], got {self.keyed_weight}")
        if not 0 <= self.distill <= 1 or not self.distill_temperature > 0:
            raise ConfigError(f"distill must be in [0, 1] and distill_temperature > 0, got {self.distill}, {self.distill_temperature}")
        if not 0 <= self.near_share <= 1:
            raise ConfigError(f"near_share must be in [0, 1], got {self.near_share}")
        if self.decoy_keys and not self.decoy_ratio:
            raise ConfigError("decoy_keys needs decoy_ratio > 0 (the decoy keys are applied to decoy negatives)")
        for name in ("key_images", "train_images"):
            value = getattr(self, name)
            if value is not None and value < 2:
                raise ConfigError(f"{name} must be >= 2 or None, got {value}")
        if any(not 0 < f < 1 for f in self.lr_milestones):
            raise ConfigError(f"lr_milestones are fractions of the run in (0, 1), got {self.lr_milestones}")

    def for_model(self, model: nn.Module) -> AuthConfig:
        """This config with the architecture-dependent fields left at None filled in for ``model``.

        Values given explicitly are kept; a zoo architecture's entry in :data:`ARCHITECTURE_RECIPES` comes next,
        then :data:`GENERIC_RECIPE`. :func:`embed` calls it first, so the result is what embedding runs.

        Example:
            >>> from modelshield.models import build_model
            >>> resnet = build_model("resnet20", in_channels=1, image_size=8, num_classes=2)
            >>> lenet = build_model("lenet5", in_channels=1, image_size=8, num_classes=2)
            >>> AuthConfig().for_model(resnet).tail_epochs, AuthConfig().for_model(lenet).tail_epochs
            (12, 8)
            >>> AuthConfig().for_model(resnet).keyed_weight, AuthConfig().for_model(lenet).keyed_weight
            (4.0, 2.0)
            >>> AuthConfig(tail_epochs=3).for_model(resnet).tail_epochs
            3
            >>> AuthConfig().for_model(lenet).key.theta, AuthConfig().for_model(resnet).key.theta
            (1.0, 0.5)
            >>> AuthConfig().for_model(lenet).tail_lr, AuthConfig().for_model(resnet).tail_lr
            (0.002, 0.001)
            >>> AuthConfig().for_model(resnet).decoy_keys, AuthConfig(decoy_ratio=0.0).for_model(resnet).decoy_keys
            (2, 0)
        """
        recipe = {**GENERIC_RECIPE, **ARCHITECTURE_RECIPES.get(type(model).__name__, {})}
        if not self.decoy_ratio:  # no decoy negatives to put under decoy keys: the paper's method
            recipe["decoy_keys"] = 0
        key = replace(self.key, **{name[len(_KEY_PREFIX):]: value for name, value in recipe.items()
                                   if name.startswith(_KEY_PREFIX) and getattr(self.key, name[len(_KEY_PREFIX):]) is None})
        return replace(self, key=key, **{name: value for name, value in recipe.items()
                                         if not name.startswith(_KEY_PREFIX) and getattr(self, name) is None})

    def pool_size(self, means: torch.Tensor, num_bits: int) -> int:
        """How many lowest live channels the bits are drawn from: ``bit_pool``, else ``bit_pool_factor * N`` capped at
        the live ones.

        Example:
            >>> AuthConfig().pool_size(torch.tensor([0.0, 0.1, 0.2, 0.3]), 2), AuthConfig(bit_pool=2).pool_size(torch.ones(8), 2)
            (3, 2)
            >>> AuthConfig().pool_size(torch.ones(64), 8), AuthConfig().pool_size(torch.ones(512), 16)
            (64, 128)
        """
        return self.bit_pool or max(num_bits, min(self.bit_pool_factor * num_bits, int((means > 0).sum())))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (the seed is left out: it can regenerate the key)."""
        doc = asdict(self)
        doc.pop("seed")
        doc["key"].pop("seed")
        doc["lr_milestones"] = list(self.lr_milestones)
        return doc


@dataclass
class EmbedResult:
    """A protected model, its key, and how it was made.

    Attributes:
        model: the protected model (eval mode; same architecture and parameter count as the input).
        key: the key, bound to ``model``'s fingerprint.
        bits: the authentication bits.
        split: the head/tail split at the gate.
        bit_change: mean change of the bits' ``g`` under the key (target ``bits.target``).
        other_change: mean absolute change of the other channels' ``g``.
        val_legit: validation accuracy with the key (kept epoch).
        val_unauthorized: validation accuracy without the key (kept epoch).
        best_epoch: the kept epoch (1-based).
        gate_choice: how the gate was chosen (with ``"auto"``, the trial table); also in the key file.
        config: the configuration embedding ran with (:meth:`AuthConfig.for_model` of the one given; the seed is the
            one drawn when none was given).
        history: per epoch: loss, val_legit, val_unauthorized, (with decoys) val_decoy, seconds.
        timings: seconds for ``gate`` (the auto trials), ``bits``, ``key``, ``cache`` (gate activations), ``tail``
            and ``total``.
    """

    model: nn.Module
    key: AuthKey
    bits: AuthBits
    split: GateSplit
    bit_change: float
    other_change: float
    val_legit: float
    val_unauthorized: float
    best_epoch: int
    gate_choice: GateChoice
    config: AuthConfig
    history: list[dict[str, float]] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)


def model_normalization(model: nn.Module, channels: int) -> Normalization:
    """The input statistics a model applies itself (a zoo model's ``normalize``), else identity.

    Example:
        >>> from modelshield.models import build_model
        >>> from modelshield.data import Normalization
        >>> m = build_model("lenet5", in_channels=1, image_size=8, num_classes=2, normalization=Normalization((0.5,), (0.25,)))
        >>> model_normalization(m, 1)
        Normalization(mean=(0.5,), std=(0.25,))
    """
    norm = getattr(model, "normalize", None)
    if isinstance(norm, Normalize):
        return Normalization(tuple(norm.mean.flatten().tolist()), tuple(norm.std.flatten().tolist()))
    return Normalization.identity(channels)


def _subseed(seed: int, tag: str) -> int:
    """An independent seed for one use of the run's seed (so no two streams start alike)."""
    return int.from_bytes(hashlib.sha256(f"modelshield-auth:{seed}:{tag}".encode()).digest()[:8], "little") >> 1


def _embed_generator(seed: int) -> torch.Generator:
    """The generator :func:`embed` draws its key images, bits, labels and negatives from (in that order)."""
    return torch.Generator().manual_seed(_subseed(seed, "embed"))


def _draw_bits(model: nn.Module, gate: str, channels: int, x: torch.Tensor, config: AuthConfig,
               gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, int, int, AuthBits]:
    """:func:`embed`'s first draws from ``gen``: the key images (``config.key_images`` of ``x``), the gate's channel
    means on them, the bit count, the bit pool and the bits. Returns ``(key_x, means, num_bits, pool, bits)``."""
    key_x = x
    if config.key_images is not None and config.key_images < len(x):
        key_x = x[torch.randperm(len(x), generator=gen)[: config.key_images]]
    means = channel_means(model, gate, key_x)  # a_c estimated on the key-generation images
    num_bits = config.num_bits or default_num_bits(channels)
    pool = config.pool_size(means, num_bits)
    return key_x, means, num_bits, pool, select_bits(means, num_bits, config.gamma, pool=pool, generator=gen)


def _key_config(config: AuthConfig, seed: int) -> KeyGenConfig:
    """The key-generation config :func:`embed` makes the key with (its seed derived from the run's unless given)."""
    return config.key if config.key.seed is not None else replace(config.key, seed=_subseed(seed, "key"))


@torch.no_grad()
def _nearest_keys(model: nn.Module, gate: str, x: torch.Tensor, key: AuthKey, candidates: list[AuthKey],
                  count: int) -> list[AuthKey]:
    """The ``count`` candidates whose change of the gate activations on ``x`` is most like ``key``'s (mean per-image
    cosine similarity)."""
    model.eval()
    base = gate_output(model, gate, x)
    own = (gate_output(model, gate, key.apply(x)) - base).flatten(1)
    likeness = [float(F.cosine_similarity(own, (gate_output(model, gate, c.apply(x)) - base).flatten(1)).mean())
                for c in candidates]
    order = sorted(range(len(candidates)), key=lambda i: -likeness[i])[:count]
    return [candidates[i] for i in sorted(order)]


def near_keyed(x: torch.Tensor, key: AuthKey, generator: torch.Generator) -> torch.Tensor:
    """Raw images, each under a partial copy of ``key``: a random share of its pixels keeps the key's mask and
    offset, the rest take uniformly random ones (share ~ U[0, 0.8] per image).

    Such near misses teach the tail that only the whole key unlocks the model.

    Example:
        >>> import torch
        >>> from modelshield.data import Normalization
        >>> key = AuthKey.random((1, 4, 4), Normalization.identity(1), generator=torch.Generator().manual_seed(0))
        >>> near_keyed(torch.rand(3, 1, 4, 4), key, torch.Generator().manual_seed(1)).shape
        torch.Size([3, 1, 4, 4])
    """
    n, c, h, w = x.shape
    share = torch.rand(n, 1, 1, 1, generator=generator) * 0.8
    keep = torch.rand(n, 1, h, w, generator=generator) < share
    # the pixels not kept take a random key's values (half the images) or no key at all (the other half)
    plain = (torch.arange(n) % 2 == 1).view(n, 1, 1, 1)
    filler = torch.where(plain, torch.zeros(1), torch.rand(n, 1, h, w, generator=generator) * 0.5)
    m = torch.where(keep, key.mask, filler)
    offset = torch.where(keep, key.offset, (torch.rand(n, c, h, w, generator=generator) * 2 - 1) * key.theta)
    norm = key.normalization
    return norm.invert((1 - m) * norm.apply(x) + m * offset)


def random_keyed(x: torch.Tensor, normalization: Normalization, generator: torch.Generator,
                 theta: float = 0.5) -> torch.Tensor:
    """Raw images, each under its own uniformly random key (``m`` ~ U[0, 0.5] per pixel, ``P`` ~ U[-theta, theta]).

    Example:
        >>> import torch
        >>> from modelshield.data import Normalization
        >>> random_keyed(torch.rand(3, 1, 4, 4), Normalization.identity(1), torch.Generator().manual_seed(0)).shape
        torch.Size([3, 1, 4, 4])
    """
    n, c, h, w = x.shape
    m = torch.rand(n, 1, h, w, generator=generator) * 0.5
    offset = (torch.rand(n, c, h, w, generator=generator) * 2 - 1) * theta
    return normalization.invert((1 - m) * normalization.apply(x) + m * offset)


@torch.no_grad()
def _gate_batches(model: nn.Module, gate: str, x: torch.Tensor, key: AuthKey | None, batch_size: int = 512) -> torch.Tensor:
    model.eval()
    out = [gate_output(model, gate, key.apply(x[i : i + batch_size]) if key is not None else x[i : i + batch_size])
           for i in range(0, len(x), batch_size)]
    return torch.cat(out) if out else torch.empty(0)


def _with_distillation(cross_entropy: torch.Tensor, logits: torch.Tensor, index: torch.Tensor, teacher: torch.Tensor,
                       config: AuthConfig) -> torch.Tensor:
    """Per-sample loss: ``(1 - a) CE + a T^2 KL(teacher || student)`` for the keyed samples, CE for the others.

    The keyed samples are the first ``len(teacher)`` inputs (``index`` holds the batch's input positions).
    """
    keyed = index < len(teacher)
    if not bool(keyed.any()):
        return cross_entropy
    t = config.distill_temperature
    soft = F.softmax(teacher[index[keyed]] / t, dim=1)
    kl = (soft * (soft.clamp_min(1e-12).log() - F.log_softmax(logits[keyed] / t, dim=1))).sum(dim=1) * t * t
    out = cross_entropy.clone()
    out[keyed] = (1 - config.distill) * cross_entropy[keyed] + config.distill * kl
    return out


def embed(model: nn.Module, train: TensorData, val: TensorData, *, config: AuthConfig | None = None,
          normalization: Normalization | None = None, progress: bool = True) -> EmbedResult:
    """Protect a trained model with AuthNet; the input model is not modified.

    Args:
        model: a trained classifier taking raw NCHW batches (any class count and input size).
        train: the training split (bits, key and tail training).
        val: the validation split (checkpoint selection).
        config: hyperparameters.
        normalization: statistics the key's normalised space uses; default: the model's own ``normalize``
            (zoo models), else identity (the key then acts on the model's inputs directly).
        progress: show progress bars.

    Raises:
        ConfigError: empty data, shapes that do not match, or a gate that cannot be used.
    """
    config = (config or AuthConfig()).for_model(model)
    if len(train) < 2 or len(val) < 1:
        raise ConfigError(f"embedding needs at least 2 training and 1 validation images, got {len(train)} and {len(val)}")
    if train.x.shape[1:] != val.x.shape[1:]:
        raise ConfigError(f"train and val images differ in shape: {tuple(train.x.shape[1:])} vs {tuple(val.x.shape[1:])}")
    t_start = time.perf_counter()
    seed = config.seed if config.seed is not None else secrets.randbits(63)
    config = replace(config, seed=seed)
    gen = _embed_generator(seed)
    model = copy.deepcopy(model).eval()
    normalization = normalization or model_normalization(model, int(train.x.shape[1]))
    example = train.x[:8]
    if config.gate == AUTO or (config.gate is None and default_gate(model) == AUTO):
        return _embed_auto(model, train, val, config, normalization, progress)
    if config.gate is None:
        choice = GateChoice(default_gate(model), "default")
    else:
        choice = GateChoice(config.gate, "given")
    gate = choice.gate
    t_gate = time.perf_counter()
    split = trace_gate(model, gate, example)
    with torch.no_grad():
        num_classes = int(model(example[:2]).shape[1])
    if int(train.y.max()) >= num_classes:
        raise ConfigError(f"labels go up to {int(train.y.max())} but the model has {num_classes} outputs")

    key_x, means, num_bits, pool, bits = _draw_bits(model, gate, split.channels, train.x, config, gen)
    t_bits = time.perf_counter()

    keygen = generate_key(model, gate, key_x, bits, normalization, _key_config(config, seed), progress=progress)
    key = keygen.key
    decoy_keys = []
    for i in range(max(config.decoy_keys, config.decoy_candidates if config.decoy_keys else 0)):
        # every other decoy key targets the key's own bits: the tail must tell keys apart by more than their bits
        other_bits = bits if i % 2 == 0 else select_bits(means, num_bits, config.gamma, pool=pool, generator=gen)
        other = replace(config.key, seed=_subseed(seed, f"decoy-key-{i}"))
        decoy_keys.append(generate_key(model, gate, key_x, other_bits, normalization, other).key)
    if len(decoy_keys) > config.decoy_keys:  # keep the candidates nearest the key at the gate (hard negatives)
        decoy_keys = _nearest_keys(model, gate, key_x[:256], key, decoy_keys, config.decoy_keys)
    t_key = time.perf_counter()

    if config.train_images is not None and config.train_images < len(train):
        train = train[torch.randperm(len(train), generator=gen)[: config.train_images]]
    fake = torch.randint(0, num_classes, (len(train),), generator=gen)
    rounds = max(1, math.ceil(config.decoy_ratio))  # decoy_ratio > 1 reuses images (each under other keys)
    decoys = train.x[torch.cat([torch.randperm(len(train), generator=gen) for _ in range(rounds)])[: round(config.decoy_ratio * len(train))]]
    near = round(config.near_share * len(decoys))
    near_part, decoys = near_keyed(decoys[:near], key, gen), decoys[near:]
    if decoy_keys:
        half = len(decoys) // 2
        owner = torch.arange(half) % len(decoy_keys)
        keyed_part = torch.cat([decoy_keys[int(k)].apply(decoys[:half][owner == k]) for k in range(len(decoy_keys))])
        decoys = torch.cat([near_part, keyed_part, random_keyed(decoys[half:], normalization, gen, key.theta)])
    else:
        decoys = torch.cat([near_part, random_keyed(decoys, normalization, gen, key.theta)])
    fake_decoys = torch.randint(0, num_classes, (len(decoys),), generator=gen)
    # validation decoys (only with decoy training): each val image under a random key or one of the decoy keys
    val_decoy_x = None
    if config.decoy_ratio:
        owner = torch.arange(len(val)) % (len(decoy_keys) + 1)
        val_decoy_x = random_keyed(val.x, normalization, gen, key.theta)
        for k, other in enumerate(decoy_keys, start=1):
            if bool((owner == k).any()):
                val_decoy_x[owner == k] = other.apply(val.x[owner == k])
    if split.cacheable:
        runner = TailRunner(model, split, example)
        parts = [_gate_batches(model, gate, train.x, key), _gate_batches(model, gate, train.x, None)]
        if len(decoys):
            parts.append(_gate_batches(model, gate, decoys, None))
        inputs = torch.cat(parts)
        val_keyed, val_plain = _gate_batches(model, gate, val.x, key), _gate_batches(model, gate, val.x, None)
        val_decoy = None if val_decoy_x is None else _gate_batches(model, gate, val_decoy_x, None)
        forward = runner
    else:
        inputs = torch.cat([key.apply(train.x), train.x, decoys])
        val_keyed, val_plain, val_decoy = key.apply(val.x), val.x, val_decoy_x
        forward = model
    del decoys

    def predict(batch: torch.Tensor) -> torch.Tensor:
        return torch.cat([forward(batch[i : i + 1024]) for i in range(0, len(batch), 1024)])

    teacher = None
    if config.distill:  # the clean model's soft targets on the plain images, computed before the tail moves
        with torch.no_grad():
            teacher = predict(inputs[len(train) : 2 * len(train)])
    labels = torch.cat([train.y, fake, fake_decoys])
    weights = torch.ones(len(labels))
    weights[: len(train)] = config.keyed_weight
    t_cache = time.perf_counter()

    records: list[dict[str, float]] = []

    def tail_loss(net: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        x, index = batch  # the data's targets are the input positions: labels, weights and teacher are looked up
        logits = forward(x) if split.cacheable else net(x)
        per_sample = F.cross_entropy(logits, labels[index], reduction="none")
        if teacher is not None:
            per_sample = _with_distillation(per_sample, logits, index, teacher, config)
        return (per_sample * weights[index]).mean()

    def accuracy(batch: torch.Tensor) -> float:
        return score_logits(predict(batch), val.y).accuracy

    def select(_model: nn.Module) -> float:
        legit, plain = accuracy(val_keyed), accuracy(val_plain)
        record = {"val_legit": legit, "val_unauthorized": plain}
        decoy = None if val_decoy is None else accuracy(val_decoy)
        if decoy is not None:
            record["val_decoy"] = decoy
        records.append(record)
        return legit - max(plain, decoy or 0.0)

    tail_config = TrainConfig(epochs=config.tail_epochs, batch_size=config.tail_batch_size, lr=config.tail_lr,
                              optimizer="adam", weight_decay=config.weight_decay, schedule="multistep",
                              milestones=config.lr_milestones, gamma=0.1, seed=_subseed(seed, "tail"))
    run = train_model(model, (inputs, torch.arange(len(inputs))), config=tail_config, loss=tail_loss, select=select,
                      params=split.tail_parameters(model), progress=progress, description="auth: tail")
    history = [{"epoch": h["epoch"], "loss": h["loss"], **r, "seconds": h["seconds"]} for h, r in zip(run.history, records)]
    kept = records[run.best_epoch - 1]
    t_end = time.perf_counter()
    key = key.bound_to(model, gate_choice=choice)
    timings = {"gate": t_gate - t_start, "bits": t_bits - t_gate, "key": t_key - t_bits, "cache": t_cache - t_key, "tail": t_end - t_cache,
               "total": t_end - t_start}
    return EmbedResult(model, key, bits, split, keygen.bit_change, keygen.other_change, kept["val_legit"],
                       kept["val_unauthorized"], run.best_epoch, choice, config, history, timings)


def _independent_subseed(seed: int, tag: str) -> int:
    return int.from_bytes(hashlib.sha256(f"modelshield-auth-independent:{seed}:{tag}".encode()).digest()[:8], "little") >> 1


def independent_key(model: nn.Module, key: AuthKey, train: TensorData, config: AuthConfig, *, seed: int) -> AuthKey:
    """A key made with the same public procedure as ``key`` on other randomness: what an attacker who knows the
    method (and has the model and training data) but not the secret would try.

    The bits are drawn afresh (``config``'s pool rule, the same count as ``key``'s), on a fresh subset of
    ``config.key_images`` training images, and the key is generated with ``config.key`` from a fresh start, in the
    key space ``key`` names (its ``theta``, which the key file records).

    Args:
        model: the protected model.
        key: its key (gate, bit count, normalisation and input shape are taken from it).
        train: training images.
        config: the embedding configuration ``key`` was made with.
        seed: this key's randomness (one seed per independent key).
    """
    x = train.x if config.key_images is None or config.key_images >= len(train) else \
        train.subset(config.key_images, _independent_subseed(seed, "data")).x
    means = channel_means(model, key.gate, x)
    num_bits = len(key.bits) or (config.num_bits or 1)
    bits = select_bits(means, num_bits, config.gamma, pool=config.pool_size(means, num_bits),
                       generator=torch.Generator().manual_seed(_independent_subseed(seed, "bits")))
    key_config = replace(config.key, seed=_independent_subseed(seed, "key"), theta=key.theta)  # the key file names its key space
    return generate_key(model, key.gate, x, bits, key.normalization, key_config).key


def _gate_subseed(seed: int, tag: str) -> int:
    return int.from_bytes(hashlib.sha256(f"modelshield-auth-gate:{seed}:{tag}".encode()).digest()[:8], "little") >> 1


def _candidates(model: nn.Module, example: torch.Tensor, auto: AutoGateConfig) -> list[tuple[str, float]]:
    """The gates ``auto`` tries and their tail shares, cheapest tail first."""
    total = max(1, forward_macs(model, example))
    shares = {g: forward_macs(model, example, trace_gate(model, g, example).tail) / total
              for g in gate_candidates(model, example)}
    affordable = [g for g, share in shares.items() if share <= auto.max_tail_share]
    if not affordable:
        raise ConfigError(f"every gate candidate of {type(model).__name__} leaves a tail above max_tail_share="
                          f"{auto.max_tail_share} of the network ({', '.join(f'{g} {s:.2f}' for g, s in shares.items())}); "
                          "raise AutoGateConfig.max_tail_share or name the gate")
    return sorted(((g, shares[g]) for g in affordable[-auto.max_candidates:]), key=lambda item: item[1])


def _score_trial(result: EmbedResult, train: TensorData, val: TensorData, config: AuthConfig, share: float,
                 seconds: float) -> GateTrial:
    """A trial's figures on ``val`` (the embedding ``result`` at one candidate gate, made with ``config``)."""
    auto, gate, seed = config.auto, result.split.gate, int(config.seed or 0)
    gen = torch.Generator().manual_seed(_gate_subseed(seed, f"random:{gate}"))
    randoms = [accuracy_with_key(result.model, AuthKey.random(result.key.input_shape, result.key.normalization, gate,
                                                              generator=gen, theta=result.key.theta), val)
               for _ in range(auto.random_keys)]
    independent = [accuracy_with_key(result.model, independent_key(result.model, result.key, train, config,
                                                                   seed=_gate_subseed(seed, f"independent:{gate}:{i}")), val)
                   for i in range(auto.independent_keys)]
    legit, unauthorized = accuracy_with_key(result.model, result.key, val), evaluate(result.model, val).accuracy
    decoy = result.history[result.best_epoch - 1].get("val_decoy", 0.0)
    random_max, independent_max = max(randoms, default=0.0), max(independent, default=0.0)
    return GateTrial(gate, tuple(result.split.gate_shape), round(share, 4), legit, unauthorized, random_max, decoy,
                     independent_max, trial_score(legit, unauthorized, random_max, decoy, independent_max), seconds)


def _embed_auto(model: nn.Module, train: TensorData, val: TensorData, config: AuthConfig, normalization: Normalization,
                progress: bool) -> EmbedResult:
    """``gate="auto"``: embed at each candidate, cheapest tail first, and keep the first whose validation score
    reaches ``config.auto.accept_score`` (the rule is in :mod:`modelshield.auth.autogate`)."""
    auto, t_start = config.auto, time.perf_counter()
    candidates = _candidates(model, train.x[:8], auto)
    val_sub = val.subset(auto.val_images, _gate_subseed(int(config.seed or 0), "val")) if auto.val_images < len(val) else val
    trials: list[GateTrial] = []
    for gate, share in candidates:
        t0 = time.perf_counter()
        trial_config = replace(config, gate=gate)
        result = embed(model, train, val, config=trial_config, normalization=normalization, progress=progress)
        trials.append(_score_trial(result, train, val_sub, trial_config, share, time.perf_counter() - t0))
        if trials[-1].score >= auto.accept_score:
            choice = GateChoice(gate, "auto", tuple(trials), tuple(g for g, _ in candidates))
            timings = {**result.timings, "gate": time.perf_counter() - t_start - result.timings["total"],
                       "total": time.perf_counter() - t_start}
            return replace(result, key=result.key.bound_to(result.model, gate_choice=choice), gate_choice=choice,
                           timings=timings)
    raise ConfigError(f"gate=\"auto\": no candidate gate of {type(model).__name__} protected it on the validation split "
                      f"(score = with key - worst without it, needed {auto.accept_score:.2f}):\n{trial_table(trials)}\n"
                      "name a gate (AuthConfig(gate=...)), allow deeper gates (AutoGateConfig.max_tail_share, "
                      "max_candidates), or lengthen the recipe (tail_epochs, train_images)")


def choose_gate(model: nn.Module, train: TensorData, val: TensorData, config: AuthConfig, *,
                progress: bool = False) -> GateChoice:
    """The gate ``gate="auto"`` chooses for ``model`` and its trial table (the rule is in
    :mod:`modelshield.auth.autogate`). It costs what :func:`embed` with ``gate="auto"`` costs, which keeps the
    protected model as well: call that to protect a model.

    Args:
        model: a trained classifier (not modified).
        train: training images (key generation and tail training of the trials).
        val: validation images (the trials' scores; never pass the test split).
        config: the embedding configuration (its ``gate`` is ignored); its ``auto`` field sets the trials.
        progress: show progress bars.

    Raises:
        ConfigError: no usable candidate, or none reached ``config.auto.accept_score``.
    """
    return embed(model, train, val, config=replace(config, gate=AUTO), progress=progress).gate_choice

