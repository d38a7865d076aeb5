"""What an extraction attack collects: its queries and the oracle's answers, in query order.

Example:
    >>> import torch
    >>> t = Transcript(torch.zeros(5, 1, 2, 2), torch.full((5, 3), 1 / 3))
    >>> len(t), len(t.prefix(2)), t.labels
    (5, 2, 'soft')
    >>> Transcript(torch.zeros(2, 1, 2, 2), torch.eye(3)[[2, 0]]).labels
    'hard'
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import torch

from modelshield.errors import ConfigError

__all__ = ["Transcript"]


@dataclass(frozen=True)
class Transcript:
    """Queries (N, C, H, W) and answers (N, K), row i answering query i."""

    x: torch.Tensor
    answers: torch.Tensor

    def __post_init__(self) -> None:
        if self.x.shape[0] != self.answers.shape[0]:
            raise ConfigError(f"transcript: {self.x.shape[0]} queries but {self.answers.shape[0]} answers")

    def __len__(self) -> int:
        return int(self.x.shape[0])

    @property
    def labels(self) -> str:
        """``"hard"`` when every answer is a one-hot row (a label-only client, or a top-1 defense), else ``"soft"``."""
        a = self.answers
        one_hot = bool(((a == 0) | (a == 1)).all()) and bool((a.sum(dim=1) == 1).all())
        return "hard" if len(self) and one_hot else "soft"

    def prefix(self, n: int) -> Transcript:
        """The first ``n`` queries and answers (what an attacker with budget ``n`` would have collected)."""
        return Transcript(self.x[:n], self.answers[:n])

    def digest(self) -> str:
        """SHA-256 (hex, 16 digits) of queries and answers: identical transcripts train identical pirates."""
        h = hashlib.sha256()
        for t in (self.x, self.answers):
            h.update(str(tuple(t.shape)).encode())
            h.update(t.detach().float().contiguous().numpy().tobytes())
        return h.hexdigest()[:16]

    @staticmethod
    def concat(parts: list[Transcript]) -> Transcript:
        """Join transcripts in order."""
        return Transcript(torch.cat([p.x for p in parts]), torch.cat([p.answers for p in parts]))
