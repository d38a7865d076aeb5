"""Model registry: build a zoo model by name for any channel count, image size and class count."""

from __future__ import annotations

from typing import Any

from torch import nn

from modelshield.data.types import Normalization
from modelshield.errors import ConfigError, did_you_mean
from modelshield.models.zoo import LeNet5, ResNet20, SmallVGG

__all__ = ["MODEL_REGISTRY", "build_model"]

MODEL_REGISTRY: dict[str, type[nn.Module]] = {"lenet5": LeNet5, "vgg": SmallVGG, "resnet20": ResNet20}
_ALIASES = {"lenet": "lenet5", "lenet-5": "lenet5", "vgg-small": "vgg", "small-vgg": "vgg", "resnet-20": "resnet20"}


def build_model(
    name: str, *, in_channels: int, image_size: int, num_classes: int,
    normalization: Normalization | None = None, **arch_kwargs: Any,
) -> nn.Module:
    """Build an untrained zoo model.

    Args:
        name: ``lenet5``, ``vgg`` or ``resnet20``.
        in_channels: input channels (1 for grey, 3 for colour).
        image_size: side of the square input images.
        num_classes: number of output classes.
        normalization: statistics the model applies to its raw [0, 1] input; default identity.
        **arch_kwargs: architecture options (e.g. ``widths`` for ``vgg``).

    Raises:
        ConfigError: unknown name, or a size/channel/class count the architecture cannot take.

    Example:
        >>> build_model("lenet5", in_channels=1, image_size=8, num_classes=10).classifier.out_features
        10
    """
    key = _ALIASES.get(name.lower(), name.lower())
    if key not in MODEL_REGISTRY:
        raise ConfigError(f"unknown model {name!r}{did_you_mean(name.lower(), MODEL_REGISTRY)}; known: {', '.join(MODEL_REGISTRY)}")
    if in_channels < 1 or num_classes < 2 or image_size < 4:
        raise ConfigError(f"model {key!r} needs in_channels >= 1, num_classes >= 2 and image_size >= 4; "
                          f"got {in_channels}, {num_classes}, {image_size}")
    if normalization is not None and normalization.channels != in_channels:
        raise ConfigError(f"normalization has {normalization.channels} channels, the model takes {in_channels}")
    try:
        return MODEL_REGISTRY[key](in_channels=in_channels, image_size=image_size, num_classes=num_classes,
                                   normalization=normalization, **arch_kwargs)
    except TypeError as exc:
        raise ConfigError(f"model {key!r}: bad architecture option ({exc})") from None
    except RuntimeError as exc:
        raise ConfigError(f"model {key!r} cannot take {in_channels}x{image_size}x{image_size} images ({exc})") from None


def canonical_model_name(name: str) -> str:
    """The registry's name for ``name`` (resolving aliases such as ``lenet``)."""
    return _ALIASES.get(name.lower(), name.lower())
