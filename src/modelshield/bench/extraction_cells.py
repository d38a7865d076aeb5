"""Cells shared by the extraction suite's grids: the recording defense wrapper and the pirate cell.

A pirate cell is keyed on the transcript's digest (and the pirate settings and the victim), so identical
transcripts (e.g. the hard labels of argmax-preserving defenses, or a sybil split that changes nothing) share
one trained pirate.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import torch

from modelshield.attacks.extraction import PirateConfig, Transcript, score_transcript
from modelshield.bench.harness import BenchContext, percent
from modelshield.data import DatasetBundle
from modelshield.defense import ClientPolicy, Defense, QueenDefense

__all__ = ["PIRATE", "PIRATE_QUICK", "Recording", "onehot", "pct", "pirate_cell"]

PIRATE, PIRATE_QUICK = PirateConfig(), PirateConfig(max_epochs=10)
DATASET = "mnist"


class Recording(Defense):
    """Wraps a defense and records which answers QUEEN reversed (bench bookkeeping only)."""

    def __init__(self, inner: Defense) -> None:
        self.inner, self.flags = inner, []  # type: list[torch.Tensor]
        self.name = inner.name

    def answer(self, x: torch.Tensor, logits: torch.Tensor, features: torch.Tensor, client_id: str,
               policy: ClientPolicy | None = None) -> torch.Tensor:
        if isinstance(self.inner, QueenDefense):
            out, rev = self.inner.answer_with_decisions(x, logits, features, client_id, policy)
        else:
            out, rev = self.inner.answer(x, logits, features, client_id, policy), torch.zeros(len(x), dtype=torch.bool)
        self.flags.append(rev)
        return out


def onehot(answers: torch.Tensor) -> torch.Tensor:
    """The top-1 one-hot rows of ``answers`` (what a label-only client receives)."""
    return torch.zeros_like(answers).scatter_(1, answers.argmax(dim=1, keepdim=True), 1.0)


def pirate_cell(ctx: BenchContext, transcript: Transcript, reversed_flags: torch.Tensor, truth: torch.Tensor,
                bundle: DatasetBundle, model: torch.nn.Module, upstream: dict[str, str]) -> dict[str, Any]:
    """Train (or reuse) the pirate of ``transcript`` and score it; add the transcript's reversal and label stats.

    ``truth`` is the undefended softmax of the transcript's queries; ``reversed_flags`` marks reversed answers.
    """
    pirate = PIRATE_QUICK if ctx.quick else PIRATE
    digest = transcript.digest()

    def train() -> dict[str, Any]:
        score = score_transcript(transcript, bundle.test, victim=model, pirate=pirate)
        return {"accuracy": score.accuracy, "fidelity": score.fidelity, "train_seconds": score.train_seconds}

    trained = ctx.cell(f"pirate-{digest}", train,
                       config={"transcript": digest, "pirate": pirate, "test": f"{DATASET} test"},
                       upstream={"victim": upstream["victim"]})
    n = len(transcript)
    return {**trained, "queries": n, "reversed_fraction": float(reversed_flags[:n].float().mean()),
            "wrong_label_fraction": float((transcript.answers.argmax(1) != truth[:n].argmax(1)).float().mean()),
            "l1_to_truth": float((transcript.answers / transcript.answers.sum(1, keepdim=True) - truth[:n]).abs().sum(1).mean())}


pct = partial(percent, digits=1, suffix="")  # the suite's tables: one decimal, the unit in the headers
