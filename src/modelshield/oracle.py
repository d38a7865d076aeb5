"""Black-box transports: the prediction interface every extraction attack talks to.

An :class:`Oracle` answers ``oracle(x) -> (N, K)`` (probability vectors, or one-hot rows where the server only
gives labels), counts the queries answered to it and carries the client id it asks as. It is a transport and
nothing more: output mode and query budget are the server's per-client policy
(:class:`~modelshield.defense.ProtectedModel` with a :class:`~modelshield.defense.ClientPolicy`), so the same
attack code runs against an in-process model and against the HTTP server, and meets the same rules.

* :class:`ModelOracle`: in process, over an ``nn.Module`` (the undefended softmax) or anything that answers
  like a server (:class:`Answerer`, e.g. a ``ProtectedModel``).
* :class:`CallableOracle`: any function ``x -> probabilities`` (or one-hot labels).
* ``HttpOracle`` (with serving): the Open Inference Protocol API over HTTP.

Queries may be torch tensors or numpy arrays, float in [0, 1] or uint8 in [0, 255]
(:func:`~modelshield.images.as_image_batch`). A call larger than the oracle's ``batch_size`` is sent as several
requests in order; if one of them is refused (e.g. :class:`~modelshield.errors.BudgetExceeded`), the earlier
ones were answered and counted by the server and by the oracle, and the error propagates.

Example:
    >>> import numpy as np, torch
    >>> from modelshield.models import build_model
    >>> model = build_model("lenet5", in_channels=1, image_size=8, num_classes=10)
    >>> oracle = ModelOracle(model, client_id="mallory")
    >>> oracle(np.zeros((3, 1, 8, 8), dtype=np.uint8)).shape, oracle.queries, oracle.num_classes
    (torch.Size([3, 10]), 3, 10)
    >>> top1 = CallableOracle(lambda x: torch.eye(2)[(x.mean(dim=(1, 2, 3)) > 0.5).long()], num_classes=2)
    >>> top1(torch.tensor([0.2, 0.9]).view(2, 1, 1, 1).expand(2, 1, 4, 4)).tolist()
    [[1.0, 0.0], [0.0, 1.0]]
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
from torch import nn

from modelshield.errors import ConfigError
from modelshield.images import as_image_batch

__all__ = ["Answerer", "CallableOracle", "ModelOracle", "Oracle"]


@runtime_checkable
class Answerer(Protocol):
    """Anything that answers query batches as a server does (``ProtectedModel`` is one)."""

    @property
    def num_classes(self) -> int:
        """K."""
        ...

    def answer(self, x: torch.Tensor, client_id: str, policy: Any = None) -> torch.Tensor:
        """The (N, K) answers for a batch from ``client_id`` under ``policy`` (the server's default when None)."""
        ...


class Oracle(ABC):
    """A counted prediction transport (subclasses implement :meth:`_answer`, one request).

    Args:
        num_classes: K.
        client_id: the identity the queries are sent as.
        batch_size: most queries per request (a larger call is split in order); None sends each call whole.

    Raises:
        ConfigError: a bad setting.
    """

    def __init__(self, num_classes: int, *, client_id: str = "client-0", batch_size: int | None = None) -> None:
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise ConfigError(f"oracle num_classes must be an integer >= 1, got {num_classes!r}")
        if not isinstance(client_id, str) or not client_id:
            raise ConfigError(f"oracle client_id must be a non-empty string, got {client_id!r}")
        if batch_size is not None and batch_size < 1:
            raise ConfigError(f"oracle batch_size must be >= 1 or None, got {batch_size}")
        self.num_classes = num_classes
        self.client_id = client_id
        self.batch_size = batch_size
        self._queries = 0
        self._lock = threading.Lock()

    @property
    def queries(self) -> int:
        """Queries answered to this oracle so far."""
        return self._queries

    def __call__(self, x: Any) -> torch.Tensor:
        """Answer a batch (N, C, H, W) -> (N, K), in order.

        Raises:
            ConfigError: the queries are not an image batch, or the transport answered with the wrong shape.
            BudgetExceeded: the server refused a request (see the module docstring for split calls).
        """
        x = as_image_batch(x, what="queries")
        n = int(x.shape[0])
        step = self.batch_size or max(n, 1)
        out = []
        for start in range(0, n, step):
            chunk = x[start : start + step]
            answers = self._checked(self._answer(chunk), len(chunk))
            with self._lock:
                self._queries += len(chunk)
            out.append(answers)
        return torch.cat(out) if out else torch.empty(0, self.num_classes)

    def _checked(self, answers: Any, n: int) -> torch.Tensor:
        if isinstance(answers, np.ndarray):
            answers = torch.from_numpy(answers)
        if not isinstance(answers, torch.Tensor):
            raise ConfigError(f"oracle answers must be a tensor of shape ({n}, {self.num_classes}), got {type(answers).__name__}")
        if tuple(answers.shape) != (n, self.num_classes):
            raise ConfigError(f"oracle answers must have shape ({n}, {self.num_classes}), got {tuple(answers.shape)}")
        return answers.float()

    @abstractmethod
    def _answer(self, x: torch.Tensor) -> torch.Tensor:
        """One request: the answers (n, K) for a validated float32 batch."""


class ModelOracle(Oracle):
    """An in-process oracle.

    Args:
        target: an ``nn.Module`` (put in eval mode and answered with its plain softmax, no policy: put it behind
            a ``ProtectedModel`` for a defense, an output mode or a budget), or an :class:`Answerer` such as
            ``ProtectedModel``.
        client_id: the identity the queries are sent as.
        policy: the client's policy passed to the answerer (e.g. ``ClientPolicy(output="label", budget=5000)``);
            None: the answerer's default.
        batch_size: queries per request, in order, as an API client would send them.

    Raises:
        ConfigError: a target of another kind, a policy for a bare model, a model without a final
            ``nn.Linear`` or ``num_classes`` attribute, or a bad setting.
    """

    def __init__(self, target: nn.Module | Answerer, *, client_id: str = "client-0", policy: Any = None,
                 batch_size: int = 256) -> None:
        if isinstance(target, Answerer):
            num_classes = int(target.num_classes)
        elif isinstance(target, nn.Module):
            if policy is not None:
                raise ConfigError("a policy needs a server that enforces it: pass ProtectedModel(model, defense) "
                                  "as the target instead of the bare model")
            num_classes = _module_classes(target)
            target.eval()
        else:
            raise ConfigError(f"ModelOracle target must be an nn.Module or have answer(x, client_id, policy) and "
                              f"num_classes (e.g. ProtectedModel), got {type(target).__name__}")
        super().__init__(num_classes, client_id=client_id, batch_size=batch_size)
        self.target = target
        self.policy = policy

    @torch.no_grad()
    def _answer(self, x: torch.Tensor) -> torch.Tensor:
        if isinstance(self.target, Answerer):
            return self.target.answer(x, self.client_id, self.policy)
        return torch.softmax(self.target(x), dim=1)


class CallableOracle(Oracle):
    """An oracle over any function ``fn(x) -> (N, K)`` probabilities (or one-hot labels): a remote API
    wrapper, a model in another framework, a recorded answer table.

    Args:
        fn: called with a float32 (N, C, H, W) tensor in [0, 1]; returns a tensor or numpy array (N, K).
        num_classes: K.
        client_id: the identity reported by :attr:`client_id` (``fn`` decides what it does with it).
    """

    def __init__(self, fn: Callable[[torch.Tensor], Any], num_classes: int, *, client_id: str = "client-0") -> None:
        if not callable(fn):
            raise ConfigError(f"CallableOracle needs a function x -> answers, got {type(fn).__name__}")
        super().__init__(num_classes, client_id=client_id)
        self.fn = fn

    def _answer(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x)  # type: ignore[no-any-return]


def _module_classes(model: nn.Module) -> int:
    declared = getattr(model, "num_classes", None)
    if isinstance(declared, int) and declared >= 1:
        return declared
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ConfigError(f"cannot tell how many classes {type(model).__name__} answers (no num_classes attribute, no "
                          "nn.Linear layer): use CallableOracle(fn, num_classes)")
    return int(linears[-1].out_features)
