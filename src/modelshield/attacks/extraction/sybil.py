"""Attacker-side query routing against per-client defenses: several accounts (Sybil), or one paced account.

A defense that keeps state per client (QUEEN's per-client coverage, a per-client budget or rate limit) can be
met by spreading the queries over several client identities, or by spacing them out in time.

* :class:`SybilOracle`: one attacker behind several accounts ``"<prefix>-0"``, ``"<prefix>-1"``, ... Each
  account is an ordinary :class:`~modelshield.oracle.Oracle` made by ``make_oracle(client_id)`` when it is
  first needed. ``contiguous`` fills account 0 with ``per_account`` queries, then account 1, and so on
  (``accounts=None``: open a new account whenever the current one is full, the pacing attacker that stays
  under any per-account threshold); ``round-robin`` sends query ``j`` (counted over the oracle's lifetime) to
  account ``j % accounts``.
* :class:`PacedOracle`: one account that waits ``window_seconds`` (``wait``, e.g. a simulated clock's
  advance) before each new window of ``per_window`` queries, to stay under a per-window threshold.

Both are oracles themselves, so every attack runs through them unchanged; answers come back in query order.

Example:
    >>> import torch
    >>> from modelshield.oracle import CallableOracle
    >>> def account(client_id: str) -> CallableOracle:
    ...     return CallableOracle(lambda x: torch.full((len(x), 2), 0.5), num_classes=2, client_id=client_id)
    >>> sybil = SybilOracle(account, accounts=3, mode="round-robin")
    >>> sybil(torch.rand(7, 1, 4, 4)).shape, sybil.accounts_used, sybil.per_account_queries
    (torch.Size([7, 2]), 3, {'sybil-0': 3, 'sybil-1': 2, 'sybil-2': 2})
    >>> waits = []
    >>> paced = PacedOracle(account("slow"), per_window=4, window_seconds=60.0, wait=waits.append)
    >>> _ = paced(torch.rand(10, 1, 4, 4))
    >>> paced.queries, paced.windows_used, waits
    (10, 3, [60.0, 60.0])
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import torch

from modelshield.errors import BudgetExceeded, ConfigError
from modelshield.oracle import Oracle

__all__ = ["SYBIL_MODES", "PacedOracle", "SybilOracle"]

SYBIL_MODES = ("contiguous", "round-robin")


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


class SybilOracle(Oracle):
    """One attacker asking through several client accounts.

    Routing is by query number ``j`` over the oracle's lifetime (a refused call still uses up its numbers):
    ``contiguous`` sends ``j`` to account ``j // per_account``, ``round-robin`` to account ``j % accounts``.
    A call that spans several accounts is split, one request per account (in the order the accounts first
    occur in the call, each account's queries in their original order), and the answers are put back in
    query order. If an account's request is refused, the error propagates; what the other accounts already
    answered is counted in :attr:`per_account_queries`.

    Args:
        make_oracle: ``client_id -> Oracle`` asking as that client id (called once per account, lazily;
            account 0 on construction, to learn ``num_classes``).
        accounts: number of accounts; None (contiguous only): as many as needed, ``per_account`` each.
        per_account: most queries per account; required in contiguous mode; in round-robin mode an optional
            cap (at most ``accounts * per_account`` queries in all).
        mode: ``contiguous`` or ``round-robin``.
        prefix: account ``i`` asks as ``f"{prefix}-{i}"``; also this oracle's own :attr:`client_id`.

    Raises:
        ConfigError: a bad setting, or ``make_oracle`` returned something other than an Oracle asking as the
            requested client id, or accounts that disagree on ``num_classes``.
    """

    def __init__(self, make_oracle: Callable[[str], Oracle], *, accounts: int | None, per_account: int | None = None,
                 mode: str = "contiguous", prefix: str = "sybil") -> None:
        if not callable(make_oracle):
            raise ConfigError(f"SybilOracle needs a function client_id -> Oracle, got {type(make_oracle).__name__}")
        if mode not in SYBIL_MODES:
            raise ConfigError(f"SybilOracle mode must be one of {', '.join(SYBIL_MODES)}, got {mode!r}")
        if accounts is not None and not _positive_int(accounts):
            raise ConfigError(f"SybilOracle accounts must be an integer >= 1 or None, got {accounts!r}")
        if per_account is not None and not _positive_int(per_account):
            raise ConfigError(f"SybilOracle per_account must be an integer >= 1 or None, got {per_account!r}")
        if mode == "round-robin" and accounts is None:
            raise ConfigError("SybilOracle round-robin needs a number of accounts (accounts=None is contiguous only)")
        if mode == "contiguous" and per_account is None:
            raise ConfigError("SybilOracle contiguous mode needs per_account (e.g. ceil(budget / accounts))")
        if not isinstance(prefix, str) or not prefix:
            raise ConfigError(f"SybilOracle prefix must be a non-empty string, got {prefix!r}")
        self.make_oracle = make_oracle
        self.mode = mode
        self.accounts = accounts
        self.per_account = per_account
        self.prefix = prefix
        self._oracles: dict[int, Oracle] = {}
        self._baseline: dict[int, int] = {}
        self._position = 0
        first = self._account(0, num_classes=None)
        super().__init__(first.num_classes, client_id=prefix)

    @property
    def capacity(self) -> int | None:
        """Most queries this oracle will send in all (``accounts * per_account``), None when unbounded."""
        if self.accounts is None or self.per_account is None:
            return None
        return self.accounts * self.per_account

    @property
    def queries(self) -> int:
        """Queries answered through all accounts so far."""
        return sum(self.per_account_queries.values())

    @property
    def per_account_queries(self) -> dict[str, int]:
        """Queries answered per account (client id -> count), for the accounts that answered any, in account order."""
        counts = {self._client_id(i): oracle.queries - self._baseline[i] for i, oracle in sorted(self._oracles.items())}
        return {cid: n for cid, n in counts.items() if n > 0}

    @property
    def accounts_used(self) -> int:
        """Accounts that answered at least one query."""
        return len(self.per_account_queries)

    def _client_id(self, index: int) -> str:
        return f"{self.prefix}-{index}"

    def _account(self, index: int, num_classes: int | None) -> Oracle:
        if index not in self._oracles:
            client_id = self._client_id(index)
            oracle = self.make_oracle(client_id)
            if not isinstance(oracle, Oracle):
                raise ConfigError(f"SybilOracle make_oracle({client_id!r}) must return an Oracle, got {type(oracle).__name__}")
            if oracle.client_id != client_id:
                raise ConfigError(f"SybilOracle make_oracle({client_id!r}) returned an oracle asking as {oracle.client_id!r}")
            if num_classes is not None and oracle.num_classes != num_classes:
                raise ConfigError(f"SybilOracle account {client_id!r} answers {oracle.num_classes} classes, "
                                  f"account 0 answers {num_classes}")
            self._oracles[index] = oracle
            self._baseline[index] = oracle.queries
        return self._oracles[index]

    def _route(self, start: int, n: int) -> torch.Tensor:
        """The account index of queries ``start .. start + n - 1``."""
        j = torch.arange(start, start + n)
        if self.mode == "round-robin":
            return j % int(self.accounts or 1)
        return j // int(self.per_account or 1)

    def _answer(self, x: torch.Tensor) -> torch.Tensor:
        n = int(x.shape[0])
        capacity = self.capacity
        if capacity is not None and self._position + n > capacity:
            raise BudgetExceeded(f"SybilOracle: {self._position} queries sent, {n} more asked, but {self.accounts} "
                                 f"accounts x {self.per_account} queries allow {capacity}")
        route = self._route(self._position, n)
        self._position += n
        out = torch.empty(n, self.num_classes)
        for a in dict.fromkeys(route.tolist()):  # accounts in order of first occurrence
            rows = torch.nonzero(route == a).flatten()
            out[rows] = self._account(a, self.num_classes)(x[rows])
        return out


class PacedOracle(Oracle):
    """One account that spaces its queries: at most ``per_window`` per window of ``window_seconds``.

    Before the first query of each window after the first, it calls ``wait(window_seconds)``; a call that
    crosses a window boundary is split there (one request per window, in order). :attr:`windows_used` is the
    number of windows that received queries, so ``wait`` has been called ``windows_used - 1`` times.

    Args:
        oracle: the account to pace.
        per_window: most queries per window.
        window_seconds: the length of a window (what ``wait`` is asked to wait).
        wait: called with ``window_seconds`` between windows (default ``time.sleep``; in a simulation, the
            simulated clock's advance).

    Raises:
        ConfigError: a bad setting.
    """

    def __init__(self, oracle: Oracle, *, per_window: int, window_seconds: float = 1.0,
                 wait: Callable[[float], Any] = time.sleep) -> None:
        if not isinstance(oracle, Oracle):
            raise ConfigError(f"PacedOracle wraps an Oracle, got {type(oracle).__name__}")
        if not _positive_int(per_window):
            raise ConfigError(f"PacedOracle per_window must be an integer >= 1, got {per_window!r}")
        if isinstance(window_seconds, bool) or not isinstance(window_seconds, (int, float)) \
                or not math.isfinite(window_seconds) or window_seconds < 0:
            raise ConfigError(f"PacedOracle window_seconds must be a finite number >= 0, got {window_seconds!r}")
        if not callable(wait):
            raise ConfigError(f"PacedOracle wait must be callable (seconds -> None), got {type(wait).__name__}")
        super().__init__(oracle.num_classes, client_id=oracle.client_id)
        self.oracle = oracle
        self.per_window = per_window
        self.window_seconds = float(window_seconds)
        self.wait = wait
        self._baseline = oracle.queries
        self._windows = 0
        self._in_window = 0

    @property
    def queries(self) -> int:
        """Queries the wrapped account answered through this oracle."""
        return self.oracle.queries - self._baseline

    @property
    def windows_used(self) -> int:
        """Windows that received at least one query."""
        return self._windows

    def _answer(self, x: torch.Tensor) -> torch.Tensor:
        out = []
        start, n = 0, int(x.shape[0])
        while start < n:
            if self._windows == 0 or self._in_window >= self.per_window:
                if self._windows > 0:
                    self.wait(self.window_seconds)
                self._windows += 1
                self._in_window = 0
            take = min(self.per_window - self._in_window, n - start)
            self._in_window += take  # a refused request still used the window
            out.append(self.oracle(x[start : start + take]))
            start += take
        return torch.cat(out) if out else torch.empty(0, self.num_classes)
