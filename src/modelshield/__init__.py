"""modelshield: protect trained PyTorch models against theft."""

from __future__ import annotations

__version__ = "0.1.0"
