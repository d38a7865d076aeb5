"""ProtectedModel: the server-side policy (output mode, budget) and whole-batch answers (no partial state)."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from modelshield.defense import ClientPolicy, Defense, NoDefense, ProtectedModel, QueenConfig, QueenDefense
from modelshield.defense.features import FeatureSplit
from modelshield.errors import BudgetExceeded, ConfigError
from modelshield.oracle import ModelOracle
from modelshield.state import InMemoryStateStore, SQLiteStateStore


class Recorder(Defense):
    """Records each call (client, rows) and answers through an inner defense."""

    name = "recorder"

    def __init__(self, inner: Defense | None = None) -> None:
        self.inner = inner or NoDefense()
        self.calls: list[tuple[str, int]] = []

    def answer(self, x, logits, features, client_id, policy=None):  # type: ignore[no-untyped-def]
        self.calls.append((client_id, x.shape[0]))
        return self.inner.answer(x, logits, features, client_id)


class FailingOn(torch.nn.Module):
    """The victim, failing on its ``fail_on``-th forward call (a crash in the middle of a chunked batch)."""

    def __init__(self, inner: torch.nn.Module, fail_on: int) -> None:
        super().__init__()
        self.inner, self.fail_on, self.calls = inner, fail_on, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.calls == self.fail_on:
            raise RuntimeError("out of memory (simulated)")
        return self.inner(x)


def _reversing(model, artifacts, store=None) -> QueenDefense:  # type: ignore[no-untyped-def]
    config = QueenConfig(novelty_radius=0.0, threshold_queries=0, beta=100.0, shadows_per_answer=len(artifacts.shadows))
    return QueenDefense(artifacts, FeatureSplit(model).head, config, store=store)


def test_label_mode_is_the_one_hot_of_the_defended_top1(tiny, artifacts) -> None:  # type: ignore[no-untyped-def]
    model, _, held = tiny
    probs = ProtectedModel(model, _reversing(model, artifacts)).answer(held.x, "c")
    labels = ProtectedModel(model, _reversing(model, artifacts)).answer(held.x, "c", ClientPolicy(output="label"))
    assert torch.equal(labels, torch.eye(4)[probs.argmax(1)])
    assert (labels.argmax(1) != model(held.x).argmax(1)).any()  # the defended top-1, not the model's


def test_budget_refuses_a_whole_batch_and_records_nothing(tiny, artifacts) -> None:  # type: ignore[no-untyped-def]
    model, _, held = tiny
    queen = _reversing(model, artifacts)
    recorder = Recorder(queen)
    protected = ProtectedModel(model, recorder)
    policy = ClientPolicy(budget=10)
    protected.answer(held.x[:4], "eve", policy)
    protected.answer(held.x[4:10], "eve", policy)  # exactly the budget
    state_before = queen.store.get(queen.key("eve"))
    with pytest.raises(BudgetExceeded, match="client 'eve' asked for 1 more queries, 0 of 10 left"):
        protected.answer(held.x[10:11], "eve", policy)
    assert protected.queries("eve") == 10 and recorder.calls == [("eve", 4), ("eve", 6)]
    assert queen.store.get(queen.key("eve")) == state_before and queen.client_state("eve").queries == 10
    protected.answer(held.x[:2], "fred")  # no policy: no budget
    with pytest.raises(BudgetExceeded, match="asked for 5 more queries, 3 of 5 left"):
        protected.answer(held.x[:5], "fred", ClientPolicy(budget=5))
    assert protected.queries("fred") == 2 and queen.store.keys() == [queen.key("eve"), queen.key("fred")]
    assert queen.client_state("fred").queries == 2


def test_a_failure_mid_batch_leaves_no_defense_state(tiny, artifacts) -> None:  # type: ignore[no-untyped-def]
    model, _, held = tiny
    queen = _reversing(model, artifacts)
    recorder = Recorder(queen)
    failing = FailingOn(model, fail_on=3)
    protected = ProtectedModel(failing, recorder, max_batch=10)
    with pytest.raises(RuntimeError, match="simulated"):
        protected.answer(held.x[:35], "mallory")
    assert failing.calls == 3 and recorder.calls == [] and queen.store.keys() == []  # chunks 1-2 left no state
    assert protected.queries("mallory") == 35  # no refunds: the reservation stays (documented)
    out = protected.answer(held.x[:35], "mallory")  # the same batch again, now whole: one call, one commit
    assert recorder.calls == [("mallory", 35)] and queen.client_state("mallory").queries == 35
    assert torch.allclose(out, ProtectedModel(model, _reversing(model, artifacts)).answer(held.x[:35], "x"), atol=1e-6)


def test_concurrent_batches_never_overspend_a_budget(tiny, tmp_path) -> None:  # type: ignore[no-untyped-def]
    model, _, held = tiny
    path = tmp_path / "counts.db"
    replicas = [ProtectedModel(model, NoDefense(), store=SQLiteStateStore(path)) for _ in range(2)]
    answered: list[int] = []
    lock = threading.Lock()
    policy = ClientPolicy(budget=50)

    def client(protected: ProtectedModel) -> None:
        while True:
            try:
                n = len(protected.answer(held.x[:3], "alice", policy))
            except BudgetExceeded:
                return
            with lock:
                answered.append(n)

    threads = [threading.Thread(target=client, args=(replicas[i % 2],)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(answered) == 48 == replicas[0].queries("alice") == replicas[1].queries("alice")  # 16 batches of 3 fit
    assert ProtectedModel(model, NoDefense(), store=SQLiteStateStore(path)).queries("alice") == 48  # persisted


def test_numpy_and_uint8_queries(tiny) -> None:  # type: ignore[no-untyped-def]
    model, _, _ = tiny
    protected = ProtectedModel(model, NoDefense(), input_shape=(1, 8, 8))
    pixels = np.random.default_rng(1).integers(0, 256, size=(6, 1, 8, 8), dtype=np.uint8)
    expected = torch.softmax(model(torch.from_numpy(pixels).float() / 255), 1)
    assert torch.allclose(protected.answer(pixels, "u"), expected, atol=1e-6)
    assert torch.allclose(protected.answer(torch.from_numpy(pixels), "u"), expected, atol=1e-6)
    assert protected.queries("u") == 12


def test_bad_input_is_refused_before_anything_is_counted(tiny) -> None:  # type: ignore[no-untyped-def]
    model, _, _ = tiny
    recorder = Recorder()
    protected = ProtectedModel(model, recorder, input_shape=(1, 8, 8), store=InMemoryStateStore())
    with pytest.raises(ConfigError, match=r"queries must have shape \(N, 1, 8, 8\), got \(3, 1, 9, 9\)"):
        protected.answer(torch.rand(3, 1, 9, 9), "c")
    with pytest.raises(ConfigError, match="NaN"):
        protected.answer(torch.full((2, 1, 8, 8), float("nan")), "c")
    with pytest.raises(ConfigError, match="client_id must be a non-empty string"):
        protected.answer(torch.rand(2, 1, 8, 8), "")
    with pytest.raises(ConfigError, match="policy must be a ClientPolicy"):
        protected.answer(torch.rand(2, 1, 8, 8), "c", "label")  # type: ignore[arg-type]
    assert protected.queries("c") == 0 and protected.store.keys() == [] and recorder.calls == []
    assert protected.answer(torch.rand(0, 1, 8, 8), "c").shape == (0, 4) and protected.store.keys() == []


def test_oracle_over_a_protected_model_meets_the_policy(tiny) -> None:  # type: ignore[no-untyped-def]
    model, _, held = tiny
    protected = ProtectedModel(model, NoDefense())
    oracle = ModelOracle(protected, client_id="mallory", policy=ClientPolicy(output="label", budget=100), batch_size=64)
    labels = oracle(held.x[:100])
    assert torch.equal(labels, torch.eye(4)[model(held.x[:100]).argmax(1)])
    with pytest.raises(BudgetExceeded, match="0 of 100 left"):
        oracle(held.x[:1])
    assert oracle.queries == 100 == protected.queries("mallory")


@pytest.mark.parametrize("kwargs, message", [
    ({"output": "logits"}, "ClientPolicy.output must be one of probabilities, label, got 'logits'"),
    ({"budget": -1}, "ClientPolicy.budget must be an integer >= 0 or None, got -1"),
    ({"budget": 2.5}, "got 2.5"),
])
def test_policy_validation(kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        ClientPolicy(**kwargs)


def test_protected_model_settings(tiny) -> None:  # type: ignore[no-untyped-def]
    model, _, _ = tiny
    with pytest.raises(ConfigError, match="max_batch must be >= 1, got 0"):
        ProtectedModel(model, NoDefense(), max_batch=0)
    with pytest.raises(ConfigError, match="defense must be a modelshield Defense"):
        ProtectedModel(model, None)  # type: ignore[arg-type]
