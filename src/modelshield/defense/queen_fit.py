"""Fit QUEEN offline for one protected model ``f = h(phi(x))`` (spec steps 1-5).

1. ``phi`` = penultimate features, ``h`` = final linear layer (:class:`~modelshield.defense.features.FeatureSplit`).
2. Class centres ``mu_c``: mean of ``phi`` over the training samples of class ``c``.
3. Mapping network ``g`` (phi -> unit circle in R^2) trained with the supervised contrastive loss (Adam, cosine
   schedule; :func:`~modelshield.training.train_model` with a loss hook).
4. Sensitive regions from the whole training set: ``m_c`` = mean of ``g(phi(x))`` over class ``c``,
   ``rho_c`` = mean distance to ``m_c`` (the radius ``R_c = beta * rho_c`` is applied online).
5. Weak shadow models, one epoch each on small random subsets.

Example:
    >>> import torch
    >>> from modelshield.data import make_synthetic
    >>> from modelshield.models import build_model
    >>> data = make_synthetic(300, num_classes=4, seed=0)
    >>> model = build_model("lenet5", in_channels=1, image_size=8, num_classes=4)
    >>> art = fit_queen(model, data, config=QueenFitConfig(mapping_epochs=2, num_shadows=2, shadow_samples=64))
    >>> tuple(art.region_centres.shape), len(art.shadows), art.feature_dim
    ((4, 2), 2, 84)
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import torch
from torch import nn

from modelshield.data.types import Normalization, TensorData
from modelshield.defense.features import FeatureSplit
from modelshield.defense.mapping import MappingNetwork, mapping_widths
from modelshield.defense.queen_artifacts import QueenArtifacts
from modelshield.defense.shadow import SHADOW_ARCHITECTURES, train_shadows
from modelshield.defense.supcon import supervised_contrastive_loss
from modelshield.errors import ConfigError
from modelshield.models.checkpoint import state_dict_fingerprint
from modelshield.models.registry import canonical_model_name
from modelshield.training import TrainConfig, train_model

__all__ = ["DIGITS_FIT", "QueenFitConfig", "fit_queen"]


@dataclass(frozen=True)
class QueenFitConfig:
    """Settings of the offline fit.

    Attributes:
        mapping_epochs: epochs of supervised contrastive training of ``g``.
        mapping_batch_size: contrastive batch size.
        mapping_lr: Adam learning rate for ``g``.
        temperature: contrastive temperature (0.07).
        num_shadows: number of shadow models N_s.
        shadow_architecture: ``softmax`` (cheap default) or a zoo name.
        shadow_samples: images each shadow sees in its single epoch (fewer = weaker shadows; 300 gives about 50%
            accuracy on MNIST, which made REVERSE most damaging to pirates in tuning on the validation split).
        shadow_lr: shadow learning rate.
        shadow_batch_size: shadow batch size.
        seed: seeds everything the fit draws.
    """

    mapping_epochs: int = 20
    mapping_batch_size: int = 512
    mapping_lr: float = 1e-3
    temperature: float = 0.07
    num_shadows: int = 10
    shadow_architecture: str = "softmax"
    shadow_samples: int = 300
    shadow_lr: float = 1e-3
    shadow_batch_size: int = 32
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("mapping_epochs", "mapping_batch_size", "num_shadows", "shadow_samples", "shadow_batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"QueenFitConfig.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("mapping_lr", "temperature", "shadow_lr"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"QueenFitConfig.{name} must be > 0, got {getattr(self, name)}")
        arch = self.shadow_architecture if self.shadow_architecture == "softmax" else canonical_model_name(self.shadow_architecture)
        if arch not in SHADOW_ARCHITECTURES:
            raise ConfigError(f"QueenFitConfig.shadow_architecture must be one of {', '.join(SHADOW_ARCHITECTURES)}, "
                              f"got {self.shadow_architecture!r}")


def _model_normalization(model: nn.Module, data: TensorData) -> Normalization:
    norm = getattr(model, "normalize", None)
    mean, std = getattr(norm, "mean", None), getattr(norm, "std", None)
    if isinstance(mean, torch.Tensor) and isinstance(std, torch.Tensor):
        return Normalization(tuple(mean.flatten().tolist()), tuple(std.flatten().tolist()))
    return Normalization.from_images(data.x)



# QUEEN fit settings for the bundled 8x8 digits (1,400 training images): the demo's and the serve suite's
DIGITS_FIT = QueenFitConfig(mapping_epochs=15, mapping_batch_size=256, num_shadows=5, shadow_samples=150, shadow_lr=3e-3)

def fit_queen(model: nn.Module, data: TensorData, *, config: QueenFitConfig | None = None,
              val: TensorData | None = None, progress: bool = False) -> QueenArtifacts:
    """Fit QUEEN's artefacts on the defender's labelled training data.

    Args:
        model: the protected classifier (not modified).
        data: its training data (labels used for the centres, the contrastive loss and the shadows).
        config: fit settings.
        val: optional held-out data for the record (shadow accuracy, in-region fraction).
        progress: show a progress bar.

    Raises:
        ConfigError: empty data, labels out of range, or a class with no sample.
    """
    config = config or QueenFitConfig()
    start = time.perf_counter()
    split = FeatureSplit(model)
    k = split.num_classes
    if len(data) == 0:
        raise ConfigError("QUEEN needs training data, got an empty set")
    if int(data.y.min()) < 0 or int(data.y.max()) >= k:
        raise ConfigError(f"labels must be in 0..{k - 1} for a {k}-class model, got {int(data.y.min())}..{int(data.y.max())}")
    present = torch.bincount(data.y, minlength=k)
    if (present == 0).any():
        raise ConfigError(f"QUEEN needs samples of every class; missing: {torch.nonzero(present == 0).flatten().tolist()}")
    phi = split.features(data.x)
    onehot = torch.nn.functional.one_hot(data.y, k).float()
    class_centres = (onehot.T @ phi) / present[:, None].float()

    torch.manual_seed(config.seed)
    mapping = MappingNetwork(mapping_widths(phi.shape[1]))
    schedule = TrainConfig(epochs=config.mapping_epochs, batch_size=config.mapping_batch_size, lr=config.mapping_lr,
                           optimizer="adam", schedule="cosine", seed=config.seed)
    run = train_model(mapping, (phi, data.y), config=schedule, progress=progress, description="QUEEN mapping",
                      loss=lambda g, batch: supervised_contrastive_loss(g(batch[0]), batch[1], config.temperature))
    losses, n = [h["loss"] for h in run.history], len(phi)
    mapping.eval()
    with torch.no_grad():
        z = mapping(phi)
        region_centres = (onehot.T @ z) / present[:, None].float()
        dist = (z - region_centres[data.y]).norm(dim=1)
        region_spread = (onehot.T @ dist[:, None]).flatten() / present.float()
    if (region_spread <= 0).any():
        raise ConfigError("a class collapsed to a single point in the mapping space; train g for fewer epochs or check the data")

    normalization = _model_normalization(model, data)
    shadows = train_shadows(data, num_classes=k, count=config.num_shadows, samples=config.shadow_samples,
                            architecture=config.shadow_architecture, lr=config.shadow_lr,
                            batch_size=config.shadow_batch_size, seed=config.seed, normalization=normalization)
    record: dict[str, object] = {"config": asdict(config), "train_samples": n, "mapping_loss": losses,
                                 "region_spread": region_spread.tolist(), "fit_seconds": 0.0}
    if val is not None and len(val):
        with torch.no_grad():
            accs = [float((s(val.x).argmax(1) == val.y).float().mean()) for s in shadows]
            vphi, vlogits = split(val.x)
            vz = mapping(vphi)
            vc = vlogits.argmax(1)
            inside = (vz - region_centres[vc]).norm(dim=1) < region_spread[vc]
        record.update(shadow_val_accuracy=accs, val_in_region_fraction=float(inside.float().mean()))
    art = QueenArtifacts(mapping, class_centres, region_centres, region_spread, shadows, config.shadow_architecture,
                         tuple(int(s) for s in data.x.shape[1:]), normalization,  # type: ignore[arg-type]
                         state_dict_fingerprint(model.state_dict()), record)
    record["fit_seconds"] = round(time.perf_counter() - start, 2)
    return art
