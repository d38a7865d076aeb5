"""QUEEN: order semantics of the vectorised update, PERTURB, REVERSE, the pirate-loss effect, client isolation."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from modelshield.defense import (
    ProtectedModel,
    QueenClientState,
    QueenConfig,
    QueenDefense,
    load_queen_artifacts,
)
from modelshield.defense.features import FeatureSplit
from modelshield.defense.queen import decide_batch, perturb_probabilities, reverse_probabilities
from modelshield.defense.shadow import train_shadows
from modelshield.errors import ConfigError
from modelshield.oracle import ModelOracle
from modelshield.state import SQLiteStateStore


def naive_decisions(classes, z, in_region, inc, *, k, radius, threshold, threshold_queries):  # type: ignore[no-untyped-def]
    """The spec's per-sample loop, literally."""
    points: list[list[np.ndarray]] = [[] for _ in range(k)]
    cov = [0.0] * k
    out = []
    for c, zi, inside, step in zip(classes, z, in_region, inc):
        if not inside or any(np.linalg.norm(zi - p) <= radius for p in points[c]):
            out.append(False)
            continue
        over = len(points[c]) >= threshold_queries if threshold_queries is not None else cov[c] > threshold
        if over:
            out.append(True)
            continue
        points[c].append(zi)
        cov[c] += step
        out.append(False)
    return np.array(out), [len(p) for p in points], cov


@pytest.mark.parametrize("threshold, threshold_queries", [(0.3, None), (math.inf, 12)])
@pytest.mark.parametrize("batch", [1, 7, 64, 500])
def test_vectorised_update_equals_per_sample_loop(batch: int, threshold: float, threshold_queries: int | None) -> None:
    rng = np.random.default_rng(batch)
    n, k, radius = 500, 3, 0.005
    z = rng.uniform(0, 0.04, size=(n, 2)).astype(np.float32)  # dense: many within-batch conflicts
    classes = rng.integers(0, k, size=n)
    in_region = rng.random(n) < 0.7
    inc = rng.uniform(0.001, 0.05, size=n)
    want, counts, cov = naive_decisions(classes, z, in_region, inc, k=k, radius=radius, threshold=threshold,
                                        threshold_queries=threshold_queries)
    state = QueenClientState.empty(k)
    got = np.concatenate([
        decide_batch(state, classes[s : s + batch], z[s : s + batch], in_region[s : s + batch], inc[s : s + batch],
                     radius=radius, threshold=threshold, threshold_queries=threshold_queries)
        for s in range(0, n, batch)])
    assert want.sum() > 20 and (~want & in_region).sum() > 20  # both outcomes occur
    assert np.array_equal(got, want)
    assert state.counts.tolist() == counts and np.allclose(state.coverage, cov)
    assert int(state.reversed.sum()) == int(want.sum()) and state.queries == n


def test_perturb_preserves_the_label_and_changes_the_vector(tiny, artifacts) -> None:  # type: ignore[no-untyped-def]
    model, _, held = tiny
    split = FeatureSplit(model)
    phi, logits = split(held.x)
    labels = logits.argmax(1)
    out = perturb_probabilities(phi, labels, artifacts.class_centres, split.head, 0.05, 20)
    assert torch.equal(out.argmax(1), labels)
    moved = (out - torch.softmax(logits, 1)).abs().sum(1)
    assert (moved > 1e-4).float().mean() > 0.9


def test_reverse_is_the_simplex_point_of_highest_cosine() -> None:
    gen = torch.Generator().manual_seed(0)
    p = torch.softmax(3 * torch.randn(20, 5, generator=gen), 1)
    q = torch.softmax(torch.randn(20, 5, generator=gen), 1)
    best = reverse_probabilities(p, q)
    assert torch.allclose(best.sum(1), torch.ones(20)) and (best >= 0).all()
    u = 2 * q - p
    candidates = torch.distributions.Dirichlet(torch.full((5,), 0.3)).sample((4000,))
    candidates = torch.cat([candidates, torch.eye(5)])
    cos_best = F.cosine_similarity(best, u, dim=1)
    cos_all = F.cosine_similarity(candidates[None], u[:, None], dim=2).max(1).values
    assert (cos_best >= cos_all - 1e-5).all()
    neg = reverse_probabilities(torch.tensor([[0.5, 0.5]]), torch.tensor([[0.1, 0.2]]))
    assert neg.tolist() == [[0.0, 1.0]]  # no positive entry: one-hot on argmax u


def _all_reversed(model, artifacts, store=None) -> QueenDefense:  # type: ignore[no-untyped-def]
    config = QueenConfig(novelty_radius=0.0, threshold_queries=0, beta=100.0, shadows_per_answer=len(artifacts.shadows))
    return QueenDefense.for_model(model, artifacts, config, store=store)


def _soft_ce(model: torch.nn.Module, x: torch.Tensor, target: torch.Tensor) -> float:
    with torch.no_grad():
        return float(-(target * F.log_softmax(model(x), 1)).sum(1).mean())


def test_reversed_answers_push_a_pirate_the_wrong_way(tiny, artifacts) -> None:  # type: ignore[no-untyped-def]
    model, train, held = tiny
    with torch.no_grad():
        truth = torch.softmax(model(held.x), 1)
    reversed_answers = ModelOracle(ProtectedModel(model, _all_reversed(model, artifacts)))(held.x)
    assert not torch.allclose(reversed_answers, truth, atol=0.05)
    # a half-trained pirate of the kind the shadows stand for, but trained independently (other seed, other data)
    pirate = train_shadows(train, num_classes=4, count=1, samples=256, lr=1e-2, seed=99,
                           normalization=artifacts.normalization)[0]
    before = _soft_ce(pirate, held.x, truth)
    after = {}
    for name, answers in (("clean", truth), ("reversed", reversed_answers)):
        student = copy.deepcopy(pirate).train()
        opt = torch.optim.SGD(student.parameters(), lr=0.05)
        for _ in range(5):
            loss = -(answers * F.log_softmax(student(held.x), 1)).sum(1).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        after[name] = _soft_ce(student.eval(), held.x, truth)
    assert after["clean"] < before < after["reversed"]


def test_batch_answers_equal_one_query_at_a_time(tiny, artifacts) -> None:  # type: ignore[no-untyped-def]
    model, _, held = tiny
    config = QueenConfig(novelty_radius=0.005, threshold_queries=3, shadows_per_answer=len(artifacts.shadows))
    x = held.x[:120]
    batched = ModelOracle(ProtectedModel(model, QueenDefense.for_model(model, artifacts, config)), batch_size=120)(x)
    single_defense = QueenDefense.for_model(model, artifacts, config)
    single = ModelOracle(ProtectedModel(model, single_defense), batch_size=1)(x)
    assert torch.allclose(batched, single, atol=1e-5)
    state = single_defense.client_state("client-0")
    assert state.reversed.sum() > 0 and state.queries == 120


@pytest.mark.parametrize("store_kind", ["memory", "sqlite"])
def test_clients_are_isolated_and_state_persists(tiny, artifacts, tmp_path, store_kind: str) -> None:  # type: ignore[no-untyped-def]
    model, _, held = tiny
    make_store = (lambda: SQLiteStateStore(tmp_path / "state.db")) if store_kind == "sqlite" else (lambda: None)
    defense = _all_reversed(model, artifacts, make_store())
    mallory = ModelOracle(ProtectedModel(model, defense), client_id="mallory")(held.x)
    assert defense.client_state("mallory").reversed.sum() > 0.5 * len(held)
    assert (mallory.argmax(1) != model(held.x).argmax(1)).any()
    # alice's first query is judged on her own (empty) state: threshold 0 means her novel in-region
    # queries are reversed too, so compare with a brand-new defense instead of with "no reversal"
    alice = ModelOracle(ProtectedModel(model, defense), client_id="alice")(held.x[:30])
    fresh = ModelOracle(ProtectedModel(model, _all_reversed(model, artifacts)), client_id="alice")(held.x[:30])
    assert torch.allclose(alice, fresh, atol=1e-6)
    assert defense.client_state("alice").queries == 30 and defense.client_state("mallory").queries == len(held)
    if store_kind == "sqlite":
        again = _all_reversed(model, artifacts, make_store())
        assert again.client_state("mallory").queries == len(held)
    defense.reset("mallory")
    assert defense.client_state("mallory").queries == 0 and defense.client_state("alice").queries == 30


def test_a_flooding_client_does_not_change_another_clients_answers(tiny, artifacts) -> None:  # type: ignore[no-untyped-def]
    model, _, held = tiny
    config = QueenConfig(novelty_radius=0.0, threshold_queries=10, beta=100.0)
    defense = QueenDefense.for_model(model, artifacts, config)
    alone = ProtectedModel(model, QueenDefense.for_model(model, artifacts, config))
    benign_alone = ModelOracle(alone, client_id="alice")(held.x[:20])
    ModelOracle(ProtectedModel(model, defense), client_id="mallory")(held.x)  # mallory floods first
    benign = ModelOracle(ProtectedModel(model, defense), client_id="alice")(held.x[:20])
    assert torch.allclose(benign, benign_alone, atol=1e-6)
    assert torch.equal(benign.argmax(1), model(held.x[:20]).argmax(1))  # 20 < 10 per class x 4 classes: no reversal


def test_artifacts_round_trip_and_validation(tiny, artifacts, tmp_path) -> None:  # type: ignore[no-untyped-def]
    model, _, held = tiny
    path = artifacts.save(tmp_path / "queen.safetensors")
    loaded = load_queen_artifacts(path)
    a = ModelOracle(ProtectedModel(model, _all_reversed(model, artifacts)))(held.x)
    b = ModelOracle(ProtectedModel(model, _all_reversed(model, loaded)))(held.x)
    assert torch.allclose(a, b, atol=1e-6) and loaded.record["config"] == artifacts.record["config"]
    other = copy.deepcopy(model)
    with torch.no_grad():
        other.classifier.bias.add_(1.0)
    with pytest.raises(ConfigError, match="fitted for model"):
        QueenDefense.for_model(other, loaded)
    # truncated, foreign and hostile files: tests/formats/test_malformed.py
    with pytest.raises(ConfigError, match="do not exist"):
        load_queen_artifacts(tmp_path / "missing.safetensors")


def test_queen_config_validation(tiny, artifacts) -> None:  # type: ignore[no-untyped-def]
    model, _, _ = tiny
    for kwargs in ({"novelty_radius": -1.0}, {"alpha": 0.0}, {"threshold_queries": -2}, {"perturb_steps": -1},
                   {"shadows_per_answer": 0}):
        with pytest.raises(ConfigError):
            QueenConfig(**kwargs)
    with pytest.raises(ConfigError, match="shadow models"):
        QueenDefense.for_model(model, artifacts, QueenConfig(shadows_per_answer=99))


def test_stacked_shadows_equal_the_per_model_loop(tiny, artifacts) -> None:  # type: ignore[no-untyped-def]
    model, _, held = tiny
    config = QueenConfig(shadows_per_answer=3, seed=5)
    fast, slow = QueenDefense.for_model(model, artifacts, config), QueenDefense.for_model(model, artifacts, config)
    assert fast._stacked is not None
    slow._stacked = None
    assert torch.allclose(fast._shadow_mean(held.x), slow._shadow_mean(held.x), atol=1e-6)


def test_perturb_matches_moving_the_features_explicitly(tiny, artifacts) -> None:  # type: ignore[no-untyped-def]
    model, _, held = tiny
    split = FeatureSplit(model)
    phi, logits = split(held.x)
    labels = logits.argmax(1)
    out = perturb_probabilities(phi, labels, artifacts.class_centres, split.head, 0.05, 20)
    far = artifacts.class_centres[torch.cdist(phi, artifacts.class_centres).argmax(1)]
    direction = F.normalize(far - phi, dim=1)
    expected = []
    for i in range(len(phi)):  # the literal loop: step until the label would change
        k = 0
        while k < 20 and split.head(phi[i] + 0.05 * (k + 1) * direction[i]).argmax() == labels[i]:
            k += 1
        expected.append(torch.softmax(split.head(phi[i] + 0.05 * k * direction[i]), 0))
    assert torch.allclose(out, torch.stack(expected), atol=1e-5)


def test_released_settings() -> None:
    released = QueenConfig.released()
    assert (released.novelty_radius, released.coverage_threshold, released.threshold_queries, released.beta) == (0.005, 0.2, None, 1.0)
    assert QueenConfig.released(beta=2.0).beta == 2.0
