"""Sybil and paced oracles: exact routing of queries to accounts, answers in query order, budgets, bad settings."""

from __future__ import annotations

import pytest
import torch

from modelshield.attacks.extraction import PacedOracle, SybilOracle
from modelshield.defense import ClientPolicy, NoDefense, ProtectedModel
from modelshield.errors import BudgetExceeded, ConfigError
from modelshield.models import build_model
from modelshield.oracle import CallableOracle, ModelOracle, Oracle

K = 3


def _queries(n: int) -> torch.Tensor:
    """Query i is an image filled with i / 100, so its answer can name it."""
    return (torch.arange(n, dtype=torch.float32) / 100).view(n, 1, 1, 1).expand(n, 1, 2, 2).clone()


class Log:
    """Accounts that record which query numbers each client id was asked, and answer with the query number."""

    def __init__(self) -> None:
        self.asked: dict[str, list[int]] = {}
        self.made: list[str] = []

    def __call__(self, client_id: str) -> Oracle:
        self.made.append(client_id)

        def fn(x: torch.Tensor) -> torch.Tensor:
            ids = (x[:, 0, 0, 0] * 100).round().long()
            self.asked.setdefault(client_id, []).extend(ids.tolist())
            return torch.stack([ids.float(), torch.zeros(len(ids)), torch.ones(len(ids))], dim=1)

        return CallableOracle(fn, num_classes=K, client_id=client_id)


def test_contiguous_fills_each_account_in_turn_and_splits_a_straddling_batch() -> None:
    log = Log()
    sybil = SybilOracle(log, accounts=3, per_account=4)
    assert sybil.num_classes == K and log.made == ["sybil-0"] and sybil.accounts_used == 0
    a = sybil(_queries(3))
    b = sybil(_queries(10)[3:9])  # queries 3..8: straddles accounts 0/1/2
    assert a[:, 0].tolist() == [0, 1, 2] and b[:, 0].tolist() == [3, 4, 5, 6, 7, 8]
    assert log.asked == {"sybil-0": [0, 1, 2, 3], "sybil-1": [4, 5, 6, 7], "sybil-2": [8]}
    assert log.made == ["sybil-0", "sybil-1", "sybil-2"]  # lazily, once each
    assert sybil.per_account_queries == {"sybil-0": 4, "sybil-1": 4, "sybil-2": 1}
    assert sybil.accounts_used == 3 and sybil.queries == 9 and sybil.capacity == 12


def test_contiguous_refuses_past_accounts_times_per_account_before_asking_anyone() -> None:
    log = Log()
    sybil = SybilOracle(log, accounts=2, per_account=3)
    sybil(_queries(5))
    with pytest.raises(BudgetExceeded, match="allow 6"):
        sybil(_queries(2))
    assert sybil.queries == 5 and log.asked == {"sybil-0": [0, 1, 2], "sybil-1": [3, 4]}
    sybil(_queries(1))  # the last one still fits
    assert sybil.per_account_queries == {"sybil-0": 3, "sybil-1": 3}


def test_pacing_attacker_opens_new_accounts_without_limit() -> None:
    log = Log()
    sybil = SybilOracle(log, accounts=None, per_account=2, prefix="pace")
    sybil(_queries(7))
    assert log.asked == {"pace-0": [0, 1], "pace-1": [2, 3], "pace-2": [4, 5], "pace-3": [6]}
    assert sybil.accounts_used == 4 and sybil.capacity is None and sybil.client_id == "pace"


def test_round_robin_routes_query_j_to_account_j_mod_accounts_over_the_lifetime() -> None:
    log = Log()
    sybil = SybilOracle(log, accounts=3, mode="round-robin")
    first = sybil(_queries(4))
    second = sybil(_queries(12)[4:11])  # queries 4..10: numbering continues, so query 4 goes to account 1
    assert first[:, 0].tolist() == [0, 1, 2, 3] and second[:, 0].tolist() == list(range(4, 11))
    assert log.asked == {"sybil-0": [0, 3, 6, 9], "sybil-1": [1, 4, 7, 10], "sybil-2": [2, 5, 8]}
    assert sybil.per_account_queries == {"sybil-0": 4, "sybil-1": 4, "sybil-2": 3}


def test_round_robin_per_account_cap() -> None:
    sybil = SybilOracle(Log(), accounts=2, per_account=2, mode="round-robin")
    sybil(_queries(3))
    with pytest.raises(BudgetExceeded):
        sybil(_queries(2))


def test_reassembled_answers_equal_a_single_oracles_answers_and_each_account_meets_the_server_policy() -> None:
    torch.manual_seed(0)
    model = build_model("lenet5", in_channels=1, image_size=8, num_classes=4)
    server = ProtectedModel(model, NoDefense())
    x = torch.rand(23, 1, 8, 8)
    reference = ModelOracle(model)(x)

    def account(client_id: str) -> Oracle:
        return ModelOracle(server, client_id=client_id, policy=ClientPolicy(budget=8), batch_size=3)

    for run, (mode, accounts, per_account) in enumerate((("round-robin", 3, None), ("contiguous", 3, 8), ("contiguous", None, 5))):
        sybil = SybilOracle(account, accounts=accounts, per_account=per_account, mode=mode, prefix=f"run{run}")
        got = torch.cat([sybil(x[:10]), sybil(x[10:])])
        assert torch.allclose(got, reference, atol=1e-6), mode
    # one account alone is refused by the server past its budget of 8
    with pytest.raises(BudgetExceeded):
        SybilOracle(account, accounts=1, per_account=23, prefix="alone")(x)


def test_empty_call_asks_no_one() -> None:
    log = Log()
    sybil = SybilOracle(log, accounts=2, mode="round-robin")
    assert tuple(sybil(torch.empty(0, 1, 2, 2)).shape) == (0, K)
    assert log.asked == {} and sybil.accounts_used == 0


@pytest.mark.parametrize("kwargs, match", [
    ({"accounts": 0, "per_account": 3}, "accounts"),
    ({"accounts": True, "per_account": 3}, "accounts"),
    ({"accounts": 2, "per_account": 0}, "per_account"),
    ({"accounts": 2}, "needs per_account"),
    ({"accounts": None}, "needs per_account"),
    ({"accounts": None, "mode": "round-robin"}, "round-robin"),
    ({"accounts": 2, "mode": "roundrobin"}, "mode"),
    ({"accounts": 2, "mode": "round-robin", "prefix": ""}, "prefix"),
])
def test_bad_settings(kwargs: dict, match: str) -> None:  # type: ignore[type-arg]
    with pytest.raises(ConfigError, match=match):
        SybilOracle(Log(), **kwargs)


def test_a_factory_that_ignores_the_client_id_or_disagrees_on_classes_is_refused() -> None:
    with pytest.raises(ConfigError, match="asking as 'someone'"):
        SybilOracle(lambda cid: CallableOracle(lambda x: x, 2, client_id="someone"), accounts=2, mode="round-robin")
    with pytest.raises(ConfigError, match="must return an Oracle"):
        SybilOracle(lambda cid: None, accounts=2, mode="round-robin")  # type: ignore[arg-type, return-value]

    def grows(cid: str) -> Oracle:
        k = 2 + int(cid.rsplit("-", 1)[1])
        return CallableOracle(lambda x: torch.ones(len(x), k) / k, k, client_id=cid)

    sybil = SybilOracle(grows, accounts=2, mode="round-robin")
    with pytest.raises(ConfigError, match="answers 3 classes"):
        sybil(_queries(2))


def test_paced_oracle_waits_between_windows_and_splits_at_the_boundary() -> None:
    log, waits = Log(), []
    account = log("slow")
    paced = PacedOracle(account, per_window=4, window_seconds=30.0, wait=waits.append)
    assert paced.client_id == "slow" and paced.num_classes == K and paced.windows_used == 0
    assert paced(_queries(3))[:, 0].tolist() == [0, 1, 2]
    assert waits == [] and paced.windows_used == 1
    assert paced(_queries(10)[3:10])[:, 0].tolist() == list(range(3, 10))  # 1 more in window 1, 4 in 2, 2 in 3
    assert waits == [30.0, 30.0] and paced.windows_used == 3 and paced.queries == 10 == account.queries
    paced(_queries(2))  # fills window 3 exactly: no wait
    assert waits == [30.0, 30.0]
    paced(_queries(1))
    assert waits == [30.0, 30.0, 30.0] and paced.windows_used == 4


def test_paced_oracle_drives_a_simulated_clock() -> None:
    clock = [0.0]
    stamps: list[float] = []
    account = CallableOracle(lambda x: (stamps.extend([clock[0]] * len(x)), torch.ones(len(x), 2) / 2)[1], 2)
    paced = PacedOracle(account, per_window=5, window_seconds=60.0, wait=lambda s: clock.__setitem__(0, clock[0] + s))
    paced(torch.rand(12, 1, 2, 2))
    assert stamps == [0.0] * 5 + [60.0] * 5 + [120.0] * 2


@pytest.mark.parametrize("kwargs, match", [
    ({"per_window": 0}, "per_window"),
    ({"per_window": 2, "window_seconds": -1.0}, "window_seconds"),
    ({"per_window": 2, "window_seconds": float("nan")}, "window_seconds"),
    ({"per_window": 2, "wait": 3}, "wait"),
])
def test_paced_bad_settings(kwargs: dict, match: str) -> None:  # type: ignore[type-arg]
    with pytest.raises(ConfigError, match=match):
        PacedOracle(Log()("a"), **kwargs)
    with pytest.raises(ConfigError, match="wraps an Oracle"):
        PacedOracle(lambda x: x, per_window=2)  # type: ignore[arg-type]
