"""``gate="auto"``: its configuration, trial records and acceptance rule (the trials themselves are run by
:func:`modelshield.auth.embedding.embed`, which they are).

How the gate of any CNN is chosen, scored on the validation split only:

The candidates are the outputs of the network's blocks (:func:`~modelshield.auth.gate.gate_candidates`),
less those whose tail is too expensive to train (``max_tail_share`` of the forward pass's multiply-adds),
the deepest ``max_candidates`` of them. They are tried from the cheapest tail (the deepest gate) on. A *trial*
is the full embedding with the configuration at hand at that gate (the same seed, so it is the very embedding a
user naming the gate would get), scored on validation images (never the test split)::

    score = legit - max(no key, best of the random keys, decoy keys, best of the independent keys)

where the random keys are drawn uniformly in the key space, the decoy accuracy is the embedding's own
validation decoy figure, and the independent keys are generated with the same public procedure on other
seeds (:func:`~modelshield.auth.embedding.independent_key`): what an attacker who knows the method would try.
The first trial whose score reaches ``accept_score`` is kept (no second embedding); when none does,
:func:`~modelshield.auth.embed` raises :class:`~modelshield.errors.ConfigError` with the trial table rather than
return a model that does not need its key.

Why full trials: short ones (fewer key and tail images and epochs) cannot tell gates apart. On the bench's
LeNet-5 / MNIST the tail at ``body.pool1`` rejects plain inputs only after about 450 optimiser steps (epoch 4 of
8 on 10,000 images); trials of 500-2,000 key images, 2,000-4,000 tail images and 3-8 tail epochs scored
every candidate 0 and chose ``body.pool2``, which gives no protection (``bench/dev/auth_val_sweep.py --auto``).

Example (mechanics on a tiny network; ``modelshield bench auth`` measures the choice on MNIST):
    >>> import torch
    >>> from torch import nn
    >>> from modelshield.data import make_synthetic
    >>> from modelshield.auth import AuthConfig, KeyGenConfig, choose_gate
    >>> net = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(8, 8, 3, padding=1),
    ...                     nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(8 * 9, 4))
    >>> data = make_synthetic(96, num_classes=4, image_size=12, seed=0)
    >>> config = AuthConfig(seed=0, tail_epochs=1, key=KeyGenConfig(epochs=1, seed=0),
    ...                     auto=AutoGateConfig(val_images=32, random_keys=1, independent_keys=1, accept_score=-1.0))
    >>> choice = choose_gate(net, data[torch.arange(64)], data[torch.arange(64, 96)], config, progress=False)
    >>> choice.method, [t.gate for t in choice.trials]  # the cheapest tail first; accept_score=-1 accepts it
    ('auto', ['5'])
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from modelshield.errors import ConfigError

__all__ = ["AutoGateConfig", "GateChoice", "GateTrial", "trial_score", "trial_table"]


@dataclass(frozen=True)
class AutoGateConfig:
    """How ``gate="auto"`` tries its candidates (each trial's recipe is the :class:`AuthConfig` at hand).

    Attributes:
        max_candidates: try at most this many candidates, the deepest ones (the cheapest tails).
        max_tail_share: skip candidates whose tail holds more than this share of the forward pass's
            multiply-adds (convolutions and linear layers). 0.75 keeps one embedding within half a clean
            training run at the default recipe: 8 tail epochs on 10,000 images, each seen keyed, plain and as
            1.5 decoys, is 280,000 tail passes, against 12 epochs on 35,000 images (420,000 full passes) for
            the bench's victims; at a share of 0.75 the tail work is 0.5x of that. Rejected trials add to it.
        val_images: validation images a trial is scored on (a seeded subset of the validation split).
        random_keys: uniformly random keys per trial (their best accuracy counts).
        independent_keys: keys generated independently per trial (their best accuracy counts).
        accept_score: keep the first trial (cheapest tail first) whose score reaches this (accuracy, 0-1). 0.5,
            from the validation gate studies of ``modelshield bench auth``: the gates that protect scored 0.66
            (LeNet-5 ``body.pool1``) and 0.73 (VGG ``body.block2``), those that do not 0.00-0.01
            (``body.pool2``, ``body.block3``).

    Example:
        >>> AutoGateConfig().max_candidates, AutoGateConfig(accept_score=0.6).accept_score
        (4, 0.6)
    """

    max_candidates: int = 4
    max_tail_share: float = 0.75
    val_images: int = 2000
    random_keys: int = 3
    independent_keys: int = 2
    accept_score: float = 0.5

    def __post_init__(self) -> None:
        if self.max_candidates < 1:
            raise ConfigError(f"max_candidates must be >= 1, got {self.max_candidates}")
        if not 0 < self.max_tail_share <= 1:
            raise ConfigError(f"max_tail_share must be in (0, 1], got {self.max_tail_share}")
        if self.val_images < 2:
            raise ConfigError(f"auto gate: val_images must be >= 2, got {self.val_images}")
        if self.random_keys < 0 or self.independent_keys < 0:
            raise ConfigError(f"auto gate: random_keys and independent_keys must be >= 0, got {self.random_keys}, "
                              f"{self.independent_keys}")
        if not -1 <= self.accept_score <= 1:
            raise ConfigError(f"auto gate: accept_score must be in [-1, 1], got {self.accept_score}")


def trial_score(legit: float, unauthorized: float, random_max: float, decoy: float, independent_max: float) -> float:
    """The auto rule's score of a gate: accuracy with the key minus the best anyone without it reached.

    Example:
        >>> round(trial_score(0.98, 0.03, 0.12, 0.10, 0.15), 2)
        0.83
    """
    return legit - max(unauthorized, random_max, decoy, independent_max)


@dataclass(frozen=True)
class GateTrial:
    """One candidate gate's embedding trial, scored on validation images.

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
        trials: the trial table (``"auto"``: every candidate tried, in order; the last one is kept).
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


def trial_table(trials: list[GateTrial] | tuple[GateTrial, ...]) -> str:
    """One line per trial: gate, tail share, with key, the worst of the rest and the score (for messages).

    Example:
        >>> print(trial_table([GateTrial("a", (1, 2, 2), 0.1, 0.9, 0.1, 0.2, 0.1, 0.1, 0.7, 1.0)]))
        a: tail share 0.10, with key 90.0%, worst without it 20.0%, score 0.70
    """
    return "\n".join(f"{t.gate}: tail share {t.tail_share:.2f}, with key {100 * t.legit:.1f}%, worst without it "
                     f"{100 * t.worst:.1f}%, score {t.score:.2f}" for t in trials)
