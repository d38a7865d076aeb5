"""The model zoo: LeNet-5, a small VGG-style CNN and a CIFAR-style ResNet-20.

Every zoo model takes RAW images in [0, 1] (its first step is a :class:`Normalize` module holding the
dataset's statistics as buffers), exposes ``features(x)`` (the penultimate representation) and
``classifier`` (the final ``nn.Linear``), and works for any channel count, square image size and class count.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from modelshield.data.types import Normalization

__all__ = ["LeNet5", "Normalize", "ResNet20", "SmallVGG", "ZooModel"]


class Normalize(nn.Module):
    """``(x - mean) / std`` with per-channel statistics stored as buffers (saved with the weights)."""

    def __init__(self, normalization: Normalization) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(normalization.mean).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(normalization.std).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class ZooModel(nn.Module):
    """Base class: ``forward(x) = classifier(features(x))`` with ``features(x) = body(normalize(x))``."""

    normalize: Normalize
    body: nn.Module
    classifier: nn.Linear

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate features of a raw batch."""
        return self.body(self.normalize(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def _flat_size(body: nn.Module, channels: int, size: int) -> int:
    with torch.no_grad():
        return int(body(torch.zeros(1, channels, size, size)).shape[1])


class LeNet5(ZooModel):
    """LeNet-5 with ReLU and max-pooling: conv 6@5x5 (padded), pool, conv 16@5x5, pool, fc 120, fc 84.

    The second convolution is padded too when the image is smaller than 20 pixels, so 8x8 digits work.

    Example:
        >>> import torch
        >>> LeNet5(in_channels=1, image_size=28, num_classes=10)(torch.rand(2, 1, 28, 28)).shape
        torch.Size([2, 10])
    """

    def __init__(self, in_channels: int, image_size: int, num_classes: int, normalization: Normalization | None = None) -> None:
        super().__init__()
        self.normalize = Normalize(normalization or Normalization.identity(in_channels))
        pad2 = 0 if image_size >= 20 else 2
        convs = nn.Sequential(OrderedDict(
            conv1=nn.Conv2d(in_channels, 6, 5, padding=2), relu1=nn.ReLU(), pool1=nn.MaxPool2d(2),
            conv2=nn.Conv2d(6, 16, 5, padding=pad2), relu2=nn.ReLU(), pool2=nn.MaxPool2d(2), flatten=nn.Flatten(),
        ))
        flat = _flat_size(convs, in_channels, image_size)
        self.body = nn.Sequential(OrderedDict(
            **dict(convs.named_children()),
            fc1=nn.Linear(flat, 120), relu3=nn.ReLU(), fc2=nn.Linear(120, 84), relu4=nn.ReLU(),
        ))
        self.classifier = nn.Linear(84, num_classes)


def _vgg_block(cin: int, cout: int, convs: int) -> nn.Sequential:
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    for i in range(convs):
        layers[f"conv{i + 1}"] = nn.Conv2d(cin if i == 0 else cout, cout, 3, padding=1, bias=False)
        layers[f"bn{i + 1}"] = nn.BatchNorm2d(cout)
        layers[f"relu{i + 1}"] = nn.ReLU()
    layers["pool"] = nn.MaxPool2d(2, ceil_mode=True)
    return nn.Sequential(layers)


class SmallVGG(ZooModel):
    """A small VGG-style CNN: three blocks of 3x3 conv + BatchNorm + ReLU, each ending in 2x2 max-pooling,
    then a 256-unit hidden layer with dropout.

    Args:
        widths: channels of the three blocks (default 32, 64, 128).
        convs_per_block: convolutions per block (default 1, 1, 2).

    Example:
        >>> import torch
        >>> SmallVGG(in_channels=3, image_size=32, num_classes=100)(torch.rand(2, 3, 32, 32)).shape
        torch.Size([2, 100])
    """

    def __init__(self, in_channels: int, image_size: int, num_classes: int, normalization: Normalization | None = None,
                 widths: tuple[int, int, int] = (32, 64, 128), convs_per_block: tuple[int, int, int] = (1, 1, 2)) -> None:
        super().__init__()
        self.normalize = Normalize(normalization or Normalization.identity(in_channels))
        blocks: OrderedDict[str, nn.Module] = OrderedDict()
        cin = in_channels
        for i, (width, convs) in enumerate(zip(widths, convs_per_block)):
            blocks[f"block{i + 1}"] = _vgg_block(cin, width, convs)
            cin = width
        blocks["flatten"] = nn.Flatten()
        flat = _flat_size(nn.Sequential(blocks), in_channels, image_size)
        self.body = nn.Sequential(OrderedDict(**blocks, fc1=nn.Linear(flat, 256), relu=nn.ReLU(), dropout=nn.Dropout(0.3)))
        self.classifier = nn.Linear(256, num_classes)


class _BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class ResNet20(ZooModel):
    """CIFAR-style ResNet-20 (He et al. 2016): 3 stages of 3 basic blocks, widths 16/32/64, global pooling.

    Example:
        >>> import torch
        >>> ResNet20(in_channels=1, image_size=28, num_classes=10)(torch.rand(2, 1, 28, 28)).shape
        torch.Size([2, 10])
    """

    def __init__(self, in_channels: int, image_size: int, num_classes: int, normalization: Normalization | None = None,
                 blocks_per_stage: int = 3) -> None:
        super().__init__()
        del image_size  # global pooling makes the network size-agnostic
        self.normalize = Normalize(normalization or Normalization.identity(in_channels))
        layers: OrderedDict[str, nn.Module] = OrderedDict(
            stem=nn.Conv2d(in_channels, 16, 3, padding=1, bias=False), stem_bn=nn.BatchNorm2d(16), stem_relu=nn.ReLU()
        )
        cin = 16
        for stage, width in enumerate((16, 32, 64)):
            stride = 1 if stage == 0 else 2
            blocks = [_BasicBlock(cin if i == 0 else width, width, stride if i == 0 else 1) for i in range(blocks_per_stage)]
            layers[f"layer{stage + 1}"] = nn.Sequential(*blocks)
            cin = width
        layers["pool"] = nn.AdaptiveAvgPool2d(1)
        layers["flatten"] = nn.Flatten()
        self.body = nn.Sequential(layers)
        self.classifier = nn.Linear(64, num_classes)
