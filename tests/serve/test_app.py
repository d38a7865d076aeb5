"""The app in process (FastAPI TestClient): protocol, clients, policies, limits, errors, metrics."""

from __future__ import annotations

import json

import pytest
import torch
from fastapi.testclient import TestClient

from modelshield.defense import NoDefense, ProtectedModel
from modelshield.models import build_model
from modelshield.serve import ClientRegistry, ClientSpec, ServeConfig, create_app
from modelshield.serve.metrics import ActionRecorder
from modelshield.state import InMemoryStateStore

NAME = "digits"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def env():  # type: ignore[no-untyped-def]
    torch.manual_seed(0)
    model = build_model("lenet5", in_channels=1, image_size=8, num_classes=10).eval()
    store = InMemoryStateStore()
    protected = ProtectedModel(model, ActionRecorder(NoDefense()), store=store, input_shape=(1, 8, 8))
    clock = Clock()
    registry = ClientRegistry(store, clock=clock)
    app = create_app(protected, registry, ServeConfig(model_name=NAME, max_images=16, max_body_bytes=64_000))
    return TestClient(app, raise_server_exceptions=False), registry, protected, model, clock


def body(n: int = 2, datatype: str = "FP32", data: object = None, shape: object = None, **extra: object) -> dict:
    values = data if data is not None else ([0.25] * (64 * n) if datatype == "FP32" else [64] * (64 * n))
    return {"inputs": [{"name": "input", "shape": shape or [n, 1, 8, 8], "datatype": datatype, "data": values}], **extra}


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_metadata_health_and_openapi(env) -> None:  # type: ignore[no-untyped-def]
    client = env[0]
    meta = client.get(f"/v2/models/{NAME}").json()
    assert meta["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 1, 8, 8]}]
    assert [(o["name"], o["datatype"], o["shape"]) for o in meta["outputs"]] == [("probabilities", "FP32", [-1, 10]), ("label", "INT64", [-1])]
    assert client.get("/v2/health/live").status_code == client.get("/v2/health/ready").status_code == 200
    assert client.get(f"/v2/models/{NAME}/versions/1/ready").json() == {"name": NAME, "ready": True}
    assert client.get("/v2/models/other").status_code == 404
    assert client.get(f"/v2/models/{NAME}/versions/9").status_code == 404
    assert client.get("/v2").json()["name"] == "modelshield"
    schema = client.get("/openapi.json").json()
    assert "/v2/models/{name}/infer" in schema["paths"]


def test_probabilities_match_the_model_and_id_is_echoed(env) -> None:  # type: ignore[no-untyped-def]
    client, registry, protected, model, _ = env
    _, key = registry.add("alice")
    x = torch.rand(3, 1, 8, 8)
    nested = x.tolist()  # nested row-major data
    r = client.post(f"/v2/models/{NAME}/versions/1/infer", json=body(3, data=nested, id="req-7"), headers=auth(key))
    assert r.status_code == 200, r.text
    doc = r.json()
    assert doc["id"] == "req-7" and doc["model_name"] == NAME
    outs = {o["name"]: o for o in doc["outputs"]}
    probs = torch.tensor(outs["probabilities"]["data"]).view(3, 10)
    assert outs["probabilities"]["shape"] == [3, 10] and outs["label"]["datatype"] == "INT64"
    assert torch.allclose(probs, torch.softmax(model(x), 1), atol=1e-6)
    assert outs["label"]["data"] == model(x).argmax(1).tolist()
    assert protected.queries("alice") == 3


def test_uint8_is_scaled(env) -> None:  # type: ignore[no-untyped-def]
    client, registry, _, model, _ = env
    _, key = registry.add("alice")
    r = client.post(f"/v2/models/{NAME}/infer", json=body(1, "UINT8", data=[255] * 64), headers=auth(key))
    assert torch.allclose(torch.tensor(r.json()["outputs"][0]["data"]), torch.softmax(model(torch.ones(1, 1, 8, 8)), 1)[0], atol=1e-6)


def test_label_policy_gets_only_labels(env) -> None:  # type: ignore[no-untyped-def]
    client, registry, *_ = env
    _, key = registry.add("bob", ClientSpec(output="label"))
    r = client.post(f"/v2/models/{NAME}/infer", json=body(2), headers=auth(key))
    assert [o["name"] for o in r.json()["outputs"]] == ["label"]
    r = client.post(f"/v2/models/{NAME}/infer", json=body(2, outputs=[{"name": "probabilities"}]), headers=auth(key))
    assert r.status_code == 403 and "only label" in r.json()["error"]


def test_auth_401_403(env) -> None:  # type: ignore[no-untyped-def]
    client, registry, protected, *_ = env
    _, key = registry.add("carol")
    url = f"/v2/models/{NAME}/infer"
    assert client.post(url, json=body()).status_code == 401
    for header in ("Bearer", "Basic abc", "Bearer " + "x" * 5000, "Bearer ms_" + "A" * 43, "Bearer " + key[:-1] + "é"):
        r = client.post(url, json=body(), headers={"Authorization": header.encode("utf-8")})  # type: ignore[dict-item]
        assert r.status_code == 401, header[:20]
        assert r.json()["error"] and r.headers["www-authenticate"] == "Bearer"
    registry.revoke("carol")
    r = client.post(url, json=body(), headers=auth(key))
    assert r.status_code == 403 and "revoked" in r.json()["error"]
    assert protected.queries("carol") == 0


def test_budget_refuses_whole_batch(env) -> None:  # type: ignore[no-untyped-def]
    client, registry, protected, *_ = env
    _, key = registry.add("dave", ClientSpec(budget=5))
    url = f"/v2/models/{NAME}/infer"
    assert client.post(url, json=body(3), headers=auth(key)).status_code == 200
    r = client.post(url, json=body(3), headers=auth(key))
    assert r.status_code == 429 and "budget spent" in r.json()["error"] and "retry-after" not in r.headers
    assert protected.queries("dave") == 3  # nothing recorded for the refused batch
    assert client.post(url, json=body(2), headers=auth(key)).status_code == 200
    assert protected.queries("dave") == 5


def test_rate_limit_token_bucket(env) -> None:  # type: ignore[no-untyped-def]
    client, registry, _, _, clock = env
    _, key = registry.add("erin", ClientSpec(rate=0.5, burst=2))
    url = f"/v2/models/{NAME}/infer"
    codes = [client.post(url, json=body(1), headers=auth(key)).status_code for _ in range(3)]
    assert codes == [200, 200, 429]
    r = client.post(url, json=body(1), headers=auth(key))
    assert r.status_code == 429 and r.headers["retry-after"] == "2" and "rate limit" in r.json()["error"]
    clock.now += 2.0  # one token back
    assert client.post(url, json=body(1), headers=auth(key)).status_code == 200
    assert client.post(url, json=body(1), headers=auth(key)).status_code == 429


BAD = [
    ("wrong shape", body(2, shape=[2, 1, 8, 7]), "shape must be [N, 1, 8, 8]"),
    ("3-d shape", body(2, shape=[1, 8, 8]), "shape must be"),
    ("wrong datatype", body(2, "FP64"), "datatype must be one of FP32, UINT8"),
    ("length mismatch", body(2, data=[0.5] * 127), "holds 127 values"),
    ("ragged", body(1, data=[[0.5] * 32, [0.5] * 31]), "equal-length rows"),
    ("strings", body(1, data=["0.5"] * 64), "must be numbers"),
    ("booleans", body(1, data=[True] * 64), "must be numbers"),
    ("nulls", body(1, data=[None] * 64), "must be numbers"),
    ("above one", body(1, data=[1.5] * 64), "[0, 1]"),
    ("negative", body(1, data=[-0.1] * 64), "[0, 1]"),
    ("uint8 range", body(1, "UINT8", data=[256] * 64), "0..255"),
    ("uint8 float", body(1, "UINT8", data=[1.5] * 64), "integers 0-255"),
    ("huge int", body(1, "UINT8", data=[10**30] * 64), "integers 0-255"),
    ("too many images", body(17), "between 1 and 16"),
    ("zero images", body(0, shape=[0, 1, 8, 8], data=[]), "between 1 and 16"),
    ("negative n", body(1, shape=[-1, 1, 8, 8]), "between 1 and 16"),
    ("two inputs", {"inputs": body(1)["inputs"] * 2}, "exactly one input"),
    ("no inputs", {"inputs": []}, "invalid request"),
    ("unknown output", body(1, outputs=[{"name": "logits"}]), "unknown output"),
    ("inputs not a list", {"inputs": "x"}, "invalid request"),
]


@pytest.mark.parametrize("case", BAD, ids=[c[0] for c in BAD])
def test_bad_inputs_are_4xx_with_a_message(env, case) -> None:  # type: ignore[no-untyped-def]
    client, registry, protected, *_ = env
    _, key = registry.add("frank")
    _, payload, message = case
    r = client.post(f"/v2/models/{NAME}/infer", json=payload, headers=auth(key))
    assert r.status_code == 400, r.text
    assert message in r.json()["error"]
    assert protected.queries("frank") == 0


def test_nan_inf_malformed_and_oversized(env) -> None:  # type: ignore[no-untyped-def]
    client, registry, *_ = env
    _, key = registry.add("gina")
    url = f"/v2/models/{NAME}/infer"
    headers = {**auth(key), "Content-Type": "application/json"}
    for token in ("NaN", "Infinity", "-Infinity"):
        text = json.dumps(body(1)).replace("0.25", token, 1)
        r = client.post(url, content=text, headers=headers)
        assert r.status_code == 400 and "NaN or infinite" in r.json()["error"], r.text
    for text in ("{", "not json", '{"inputs": [', "\x00\xff", "[]", "null", "[[[[" * 3000):
        r = client.post(url, content=text.encode("utf-8", "surrogateescape"), headers=headers)
        assert r.status_code == 400, (text[:10], r.text)
        assert "error" in r.json()
    r = client.post(url, content=b"[" + b"0," * 40_000 + b"0]", headers=headers)
    assert r.status_code == 413 and "limit" in r.json()["error"]
    assert client.get("/v2/health/live").status_code == 200


def test_metrics_count_without_client_ids(env) -> None:  # type: ignore[no-untyped-def]
    client, registry, *_ = env
    _, key = registry.add("secret-client-name", ClientSpec(budget=1))
    url = f"/v2/models/{NAME}/infer"
    client.post(url, json=body(1), headers=auth(key))
    client.post(url, json=body(1), headers=auth(key))
    text = client.get("/metrics").text
    assert 'modelshield_requests_total{route="/v2/models/{name}/infer",status="200"} 1.0' in text
    assert 'modelshield_requests_total{route="/v2/models/{name}/infer",status="429"} 1.0' in text
    assert 'modelshield_refusals_total{reason="budget"} 1.0' in text
    assert 'modelshield_answers_total{action="none"} 1.0' in text
    assert "modelshield_request_seconds_bucket" in text
    assert "secret-client-name" not in text and key not in text


def test_queen_tiers_over_http(victim) -> None:  # type: ignore[no-untyped-def]
    """The registry's trusted flag and allowance reach QUEEN: with a threshold of 0 every novel in-region query of
    an ordinary client is reversed, a trusted client and one with a large allowance keep the model's labels."""
    from modelshield.defense import QueenConfig, QueenDefense, load_queen_artifacts

    store = InMemoryStateStore()
    queen = QueenDefense.for_model(victim.model, load_queen_artifacts(victim.queen),
                                   QueenConfig(novelty_radius=0.0, threshold_queries=0, beta=100.0), store=store)
    protected = ProtectedModel(victim.model, queen, store=store, input_shape=(1, 8, 8))
    registry = ClientRegistry(store)
    app = TestClient(create_app(protected, registry, ServeConfig(model_name=NAME)), raise_server_exceptions=False)
    keys = {"mallory": registry.add("mallory")[1], "partner": registry.add("partner", ClientSpec(trusted=True))[1],
            "customer": registry.add("customer", ClientSpec(allowance=1000))[1]}
    x = victim.bundle.attacker.x[:64]
    labels = victim.model(x).argmax(1).tolist()
    got = {}
    for name, key in keys.items():
        r = app.post(f"/v2/models/{NAME}/infer", json=body(64, data=x.flatten().tolist()), headers=auth(key))
        assert r.status_code == 200, r.text
        got[name] = next(o for o in r.json()["outputs"] if o["name"] == "label")["data"]
    assert sum(a != b for a, b in zip(got["mallory"], labels)) > 16
    assert got["partner"] == labels and got["customer"] == labels
    assert queen.client_state("partner").queries == 0 and queen.client_state("customer").queries == 64
    assert registry.show("customer").spec.allowance == 1000
