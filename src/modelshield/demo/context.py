"""What a demo stage gets: :class:`DemoContext`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from torch import nn

from modelshield.data import DatasetBundle
from modelshield.models import CheckpointMeta

__all__ = ["DemoContext"]


@dataclass(frozen=True)
class DemoContext:
    """What a demo stage gets.

    Attributes:
        model: the trained digits model (eval mode). Stages must not modify it in place (copy it).
        meta: its checkpoint metadata.
        checkpoint: path of its saved checkpoint.
        bundle: the digits dataset splits.
        workdir: a temporary folder for the stage's files.
        seed: demo seed.
        quiet: no progress bars.
        console: where to report.
    """

    model: nn.Module
    meta: CheckpointMeta
    checkpoint: Path
    bundle: DatasetBundle
    workdir: Path
    seed: int
    quiet: bool
    console: Console
