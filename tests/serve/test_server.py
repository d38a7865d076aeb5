"""The real server on loopback (a ``modelshield serve`` subprocess, QUEEN, SQLite state): unmodified
tritonclient, HttpOracle under KnockoffNets, a bounded schemathesis run and hand-written garbage."""

from __future__ import annotations

import json
import select
import socket
import zlib
from collections.abc import Iterator

import httpx
import numpy as np
import pytest
import torch

from modelshield.attacks.extraction import QueryPool
from modelshield.attacks.extraction.knockoff import KnockoffConfig, KnockoffNets
from modelshield.errors import BudgetExceeded, ConfigError
from modelshield.oracle import HttpOracle

from .conftest import QUEEN_ARGS, ServerProcess, Victim, add_client

NAME = "digits"


@pytest.fixture(scope="module")
def server(victim: Victim, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, dict[str, str]]]:
    state = f"sqlite:{tmp_path_factory.mktemp('state') / 'state.db'}"
    keys = {"alice": add_client(state, "alice"), "mallory": add_client(state, "mallory"),
            "labels": add_client(state, "labels", output="label"), "fuzz": add_client(state, "fuzz", budget=10**9),
            "tiny": add_client(state, "tiny", budget=3)}
    proc = ServerProcess([str(victim.checkpoint), "--defense", "queen", "--queen", str(victim.queen), *QUEEN_ARGS,
                          "--state", state, "--model-name", NAME, "--max-images", "64", "--max-body-bytes", "2000000"]).start()
    yield proc, keys
    proc.stop()


def test_tritonclient_reads_metadata_and_gets_correct_predictions(server, victim: Victim) -> None:  # type: ignore[no-untyped-def]
    import tritonclient.http as triton

    proc, keys = server
    client = triton.InferenceServerClient(url=proc.url.removeprefix("http://"))
    headers = {"Authorization": f"Bearer {keys['labels']}"}
    assert client.is_server_live() and client.is_server_ready() and client.is_model_ready(NAME)
    meta = client.get_model_metadata(NAME, headers=headers)
    assert meta["inputs"][0]["shape"] == [-1, 1, 8, 8] and meta["outputs"][1]["name"] == "label"
    x = victim.bundle.test.x[:32].numpy().astype(np.float32)
    inp = triton.InferInput("input", list(x.shape), "FP32")
    inp.set_data_from_numpy(x, binary_data=False)
    result = client.infer(NAME, [inp], outputs=[triton.InferRequestedOutput("label", binary_data=False)],
                          request_id="t-1", headers=headers)
    labels = result.as_numpy("label")
    assert result.get_response()["id"] == "t-1" and labels.dtype == np.int64
    with torch.no_grad():
        expected = victim.model(torch.from_numpy(x)).argmax(1).numpy()
    assert labels.tolist() == expected.tolist()  # QUEEN's PERTURB keeps the top-1 label for a benign client
    assert (labels == victim.bundle.test.y[:32].numpy()).mean() > 0.8
    with pytest.raises(Exception, match="only label"):
        client.infer(NAME, [inp], outputs=[triton.InferRequestedOutput("probabilities", binary_data=False)], headers=headers)


def test_knockoff_through_http_oracle_meets_queen_and_a_second_client_is_unaffected(server, victim: Victim) -> None:  # type: ignore[no-untyped-def]
    proc, keys = server
    alice = HttpOracle(proc.url, NAME, api_key=keys["alice"], client_id="alice")
    benign = victim.bundle.test.x[:20]
    before = alice(benign)
    with torch.no_grad():
        model_probs = torch.softmax(victim.model(victim.bundle.attacker.x), 1)
        benign_top1 = victim.model(benign).argmax(1)
    assert alice.num_classes == 10 and torch.equal(before.argmax(1), benign_top1)

    mallory = HttpOracle(proc.url, NAME, api_key=keys["mallory"], client_id="mallory", batch_size=50)
    attack = KnockoffNets(KnockoffConfig(budget=400, batch_size=50, seed=0))
    transcript = attack.collect(mallory, QueryPool(victim.bundle.attacker.x, "digits/attacker"))
    assert len(transcript) == 400 == mallory.queries
    index = {tuple(row.flatten().tolist()): i for i, row in enumerate(victim.bundle.attacker.x)}
    truth = model_probs[[index[tuple(row.flatten().tolist())] for row in transcript.x]]
    flipped = (transcript.answers.argmax(1) != truth.argmax(1)).float().mean().item()
    assert flipped > 0.3, f"only {flipped:.0%} of the attacker's answers were reversed"
    assert torch.allclose(transcript.answers.sum(1), torch.ones(400), atol=1e-4)

    after = alice(benign)  # the attacker's state is not alice's
    assert torch.allclose(after, before, atol=1e-6)
    metrics = httpx.get(proc.url + "/metrics").text
    reversed_count = float(next(line.split()[-1] for line in metrics.splitlines()
                                if line.startswith('modelshield_answers_total{action="reversed"}')))
    assert reversed_count >= flipped * 400 * 0.9
    assert "mallory" not in metrics and "alice" not in metrics


def test_http_oracle_budget_and_bad_key(server) -> None:  # type: ignore[no-untyped-def]
    proc, keys = server
    oracle = HttpOracle(proc.url, NAME, api_key=keys["tiny"])
    oracle(torch.rand(3, 1, 8, 8))
    with pytest.raises(BudgetExceeded, match="budget spent"):
        oracle(torch.rand(1, 1, 8, 8))
    with pytest.raises(ConfigError, match="401"):
        HttpOracle(proc.url, NAME, api_key="ms_" + "x" * 43)(torch.rand(1, 1, 8, 8))
    with pytest.raises(ConfigError, match="404"):
        HttpOracle(proc.url, "nope", api_key=keys["alice"])


def _raw(proc: ServerProcess, request: bytes) -> bytes:
    """Send raw bytes (stopping early when the server answers first, as it does for a body over the limit)."""
    with socket.create_connection(("127.0.0.1", proc.port), timeout=10) as sock:
        for start in range(0, len(request), 65536):
            if select.select([sock], [], [], 0)[0]:
                break
            try:
                sock.sendall(request[start : start + 65536])
            except (BrokenPipeError, ConnectionResetError):
                break
        chunks = []
        while True:
            try:
                data = sock.recv(65536)
            except ConnectionResetError:
                break
            if not data:
                break
            chunks.append(data)
    return b"".join(chunks)


def test_garbage_on_the_wire_is_4xx_and_the_server_keeps_answering(server) -> None:  # type: ignore[no-untyped-def]
    proc, keys = server
    body = json.dumps({"inputs": [{"name": "input", "shape": [1, 1, 8, 8], "datatype": "FP32", "data": [0.5] * 64}]}).encode()
    path = f"/v2/models/{NAME}/infer".encode()
    for auth in (b"Bearer \xff\xfe\x00garbage", "Bearer ключ".encode(), b"\x80\x81", b"Bearer " + b"A" * 8000,
                 b"Bearer ms_" + b"\xc3\xa9" * 43):
        reply = _raw(proc, b"POST " + path + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\n"
                     b"Authorization: " + auth + b"\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
        status = int(reply.split(b" ", 2)[1])
        assert 400 <= status < 500, reply[:200]
    key = keys["fuzz"].encode()
    head = b"POST " + path + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\nAuthorization: Bearer " + key
    chunk = b"[" * 1000
    chunked = head + b"\r\nTransfer-Encoding: chunked\r\n\r\n" + (f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n") * 2100 + b"0\r\n\r\n"
    assert int(_raw(proc, chunked).split(b" ", 2)[1]) == 413
    assert int(_raw(proc, head + b"\r\nContent-Length: 99999999999\r\n\r\n{}").split(b" ", 2)[1]) == 413
    for bad in (b"{", b"\xff\xfe", b'{"inputs": [{"name": "input", "shape": [1, 1, 8, 8], "datatype": "FP32", "data": [NaN]}]}'):
        reply = _raw(proc, head + b"\r\nContent-Length: " + str(len(bad)).encode() + b"\r\n\r\n" + bad)
        assert int(reply.split(b" ", 2)[1]) == 400 and b'"error"' in reply
    assert proc.alive() and httpx.get(proc.url + "/v2/health/live").status_code == 200
    ok = httpx.post(proc.url + path.decode(), content=body, headers={"Authorization": f"Bearer {keys['fuzz']}"})
    assert ok.status_code == 200


def test_schemathesis_finds_no_server_error(server) -> None:  # type: ignore[no-untyped-def]
    import schemathesis
    from hypothesis import HealthCheck, given, settings
    from hypothesis.errors import Unsatisfiable

    proc, keys = server
    schema = schemathesis.openapi.from_url(proc.url + "/openapi.json")
    statuses: list[int] = []
    for result in schema.get_all_operations():
        operation = result.ok()
        for mode in (schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE):
            strategy = operation.as_strategy(generation_mode=mode)
            if operation.path.endswith("/infer"):
                strategy = strategy.map(lambda case: _named(case))

            @settings(max_examples=10, deadline=None, derandomize=True, database=None,
                      suppress_health_check=list(HealthCheck))
            @given(case=strategy)
            def check(case: schemathesis.Case) -> None:
                response = case.call(base_url=proc.url, headers={"Authorization": f"Bearer {keys['fuzz']}"}, timeout=30)
                statuses.append(response.status_code)
                assert response.status_code < 500, (case.method, case.path, case.body, response.text[:300])

            try:
                check()
            except Unsatisfiable:  # nothing to make invalid (an operation without parameters or body)
                assert mode is schemathesis.GenerationMode.NEGATIVE
    assert len(statuses) > 60 and any(s == 200 for s in statuses) and any(400 <= s < 500 for s in statuses)
    assert proc.alive() and httpx.get(proc.url + "/v2/health/ready").status_code == 200


def _named(case):  # type: ignore[no-untyped-def]
    """Most generated infer cases target the served model, so the body checks are reached (not only 404)."""
    if isinstance(case.path_parameters, dict) and zlib.crc32(repr(case.body).encode()) % 4:
        case.path_parameters = {**case.path_parameters, "name": NAME}
        if "version" in case.path_parameters:
            case.path_parameters["version"] = "1"
    return case


def test_attack_extract_cli_against_the_live_server(server, victim: Victim, monkeypatch: pytest.MonkeyPatch, capsys) -> None:  # type: ignore[no-untyped-def]
    from modelshield.cli import main

    proc, keys = server
    monkeypatch.setenv("MODELSHIELD_API_KEY", keys["fuzz"])  # the key from the environment, never the command line
    code = main(["attack", "extract", str(victim.checkpoint), "--url", proc.url, "--model-name", NAME, "--budget", "100",
                 "--pirate-epochs", "1", "--json", "--quiet"])
    assert code == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["queries"] == 100 and summary["defense"]["name"] == "remote" and keys["fuzz"] not in json.dumps(summary)
