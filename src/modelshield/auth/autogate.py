"""``gate="auto"``: its configuration, trial records and choice rule (the trials themselves are run by
:func:`modelshield.auth.embedding.choose_gate`, which needs :func:`~modelshield.auth.embedding.embed`).

How the gate of any CNN is chosen by short embedding trials scored on the validation split:

The candidates are the outputs of the network's blocks (:func:`~modelshield.auth.gate.gate_candidates`),
less those whose tail is too expensive to train (``max_tail_share`` of the forward pass's multiply-adds),
the deepest ``max_candidates`` of them. At each candidate a *trial* embeds the model with the configuration
at hand, made short (fewer key images, tail images, key and tail epochs), and scores the protected model on
the validation split only (never the test split)::

    score = legit - max(no key, best of the random keys, decoy keys, best of the independent keys)

where the random keys are drawn uniformly in the key space, the decoy accuracy is the embedding's own
validation decoy figure, and the independent keys are generated with the same public procedure on other
seeds (:func:`~modelshield.auth.evaluation.independent_key`): what an attacker who knows the method would try.
The chosen gate is the cheapest candidate (smallest tail, in multiply-adds) whose score is within
``tolerance`` of the best score; the trial table records every candidate's figures and seconds.

Example (mechanics on a tiny network; ``modelshield bench auth`` measures the choice on MNIST):
    >>> import torch
    >>> from torch import nn
    >>> from modelshield.data import make_synthetic
    >>> from modelshield.auth import AuthConfig, KeyGenConfig, choose_gate
    >>> net = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(8, 8, 3, padding=1),
    ...                     nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(8 * 9, 4))
    >>> data = make_synthetic(96, num_classes=4, image_size=12, seed=0)
    >>> config = AuthConfig(seed=0, tail_epochs=1, key=KeyGenConfig(epochs=1, seed=0),
    ...                     auto=AutoGateConfig(key_images=32, train_images=32, val_images=32, random_keys=1, independent_keys=1))
    >>> choice = choose_gate(net, data[torch.arange(64)], data[torch.arange(64, 96)], config, progress=False)
    >>> choice.method, [t.gate for t in choice.trials], choice.gate in ("2", "5")
    ('auto', ['2', '5'], True)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from modelshield.errors import ConfigError

__all__ = ["AutoGateConfig", "GateChoice", "GateTrial", "pick_gate"]


@dataclass(frozen=True)
class AutoGateConfig:
    """How ``gate="auto"`` runs its trials (the rest of the trial's recipe is the :class:`AuthConfig` at hand).

    Attributes:
        max_candidates: trial at most this many candidates, the deepest ones (the cheapest tails).
        max_tail_share: skip candidates whose tail holds more than this share of the forward pass's
            multiply-adds (convolutions and linear layers). 0.75 keeps the embedding within half a clean
            training run at the default recipe: 8 tail epochs on 10,000 images, each seen keyed, plain and as
            1.5 decoys, is 280,000 tail passes, against 12 epochs on 35,000 images (420,000 full passes) for
            the bench's victims; at a share of 0.75 the tail work is 0.5x of that.
        key_images: key-generation images of a trial.
        train_images: tail-training images of a trial.
        val_images: validation images a trial is scored on (a seeded subset of the validation split).
        key_epochs: key-generation epochs of a trial.
        tail_epochs: tail epochs of a trial.
        random_keys: uniformly random keys per trial (their best accuracy counts).
        independent_keys: keys generated independently per trial (their best accuracy counts).
        tolerance: the cheapest candidate within this much of the best score is chosen (accuracy, 0-1).

    Example:
        >>> AutoGateConfig().max_candidates, AutoGateConfig(tolerance=0.05).tolerance
        (4, 0.05)
    """

    max_candidates: int = 4
    max_tail_share: float = 0.75
    key_images: int = 500
    train_images: int = 2000
    val_images: int = 2000
    key_epochs: int = 3
    tail_epochs: int = 3
    random_keys: int = 3
    independent_keys: int = 2
    tolerance: float = 0.02

    def __post_init__(self) -> None:
        if self.max_candidates < 1:
            raise ConfigError(f"max_candidates must be >= 1, got {self.max_candidates}")
        if not 0 < self.max_tail_share <= 1:
            raise ConfigError(f"max_tail_share must be in (0, 1], got {self.max_tail_share}")
        for name in ("key_images", "train_images", "val_images"):
            if getattr(self, name) < 2:
                raise ConfigError(f"auto gate: {name} must be >= 2, got {getattr(self, name)}")
        if self.key_epochs < 1 or self.tail_epochs < 1:
            raise ConfigError(f"auto gate: key_epochs and tail_epochs must be >= 1, got {self.key_epochs}, {self.tail_epochs}")
        if self.random_keys < 0 or self.independent_keys < 0:
            raise ConfigError(f"auto gate: random_keys and independent_keys must be >= 0, got {self.random_keys}, "
                              f"{self.independent_keys}")
        if not 0 <= self.tolerance < 1:
            raise ConfigError(f"auto gate: tolerance must be in [0, 1), got {self.tolerance}")


@dataclass(frozen=True)
class GateTrial:
    """One candidate gate's short embedding trial, scored on validation images.

    Attributes:
        gate: the candidate.
        gate_shape: its output shape for one image.
        tail_share: share of the forward pass's multiply-adds in the tail (the embedding cost's driver).
        legit: accuracy with the trial's key.
        unauthorized: accuracy without a key.
        random_max: best accuracy of the random keys (0 without any).
        decoy: the embedding's validation accuracy under decoy keys (0 without decoys).
        independent_max: best accuracy of the independently generated keys (0 without any).
        score: ``legit - max(unauthorized, random_max, decoy, independent_max)``.
        seconds: wall time of the trial (embedding and scoring).
    """

    gate: str
    gate_shape: tuple[int, ...]
    tail_share: float
    legit: float
    unauthorized: float
    random_max: float
    decoy: float
    independent_max: float
    score: float
    seconds: float

    @property
    def worst(self) -> float:
        """The best accuracy anyone without the key reached."""
        return max(self.unauthorized, self.random_max, self.decoy, self.independent_max)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        doc = asdict(self)
        doc["gate_shape"] = list(self.gate_shape)
        return doc

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> GateTrial:
        """Inverse of :meth:`to_dict` (fields already checked by the caller)."""
        return cls(**{**doc, "gate_shape": tuple(doc["gate_shape"])})


TRIAL_FIELDS = tuple(GateTrial.__dataclass_fields__)
METHODS = ("auto", "default", "given")


@dataclass(frozen=True)
class GateChoice:
    """How the gate was chosen.

    Attributes:
        gate: the chosen gate.
        method: ``"auto"`` (trials), ``"default"`` (the zoo table) or ``"given"`` (named in the config).
        trials: the trial table (``"auto"`` with more than one candidate; empty otherwise).
        candidates: the candidates considered (``"auto"`` only).

    Example:
        >>> GateChoice("body.pool1", "default").to_dict()
        {'gate': 'body.pool1', 'method': 'default', 'candidates': [], 'trials': []}
    """

    gate: str
    method: str
    trials: tuple[GateTrial, ...] = ()
    candidates: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ConfigError(f"gate choice method must be one of {', '.join(METHODS)}, got {self.method!r}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (stored in the key file's metadata)."""
        return {"gate": self.gate, "method": self.method, "candidates": list(self.candidates),
                "trials": [t.to_dict() for t in self.trials]}

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> GateChoice:
        """Inverse of :meth:`to_dict` (fields already checked by the caller)."""
        return cls(doc["gate"], doc["method"], tuple(GateTrial.from_dict(t) for t in doc["trials"]),
                   tuple(doc["candidates"]))


def pick_gate(trials: list[GateTrial] | tuple[GateTrial, ...], tolerance: float) -> str:
    """The cheapest trial (smallest ``tail_share``) whose score is within ``tolerance`` of the best score.

    Example:
        >>> t = lambda g, share, score: GateTrial(g, (1, 2, 2), share, 0.9, 0.1, 0.1, 0.1, 0.1, score, 1.0)
        >>> pick_gate([t("a", 0.7, 0.80), t("b", 0.1, 0.79), t("c", 0.05, 0.50)], tolerance=0.02)
        'b'
    """
    if not trials:
        raise ConfigError("no gate trials to choose from")
    best = max(t.score for t in trials)
    return min((t for t in trials if t.score >= best - tolerance), key=lambda t: (t.tail_share, -t.score)).gate
