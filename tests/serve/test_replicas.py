"""One consistent view of each client across processes, and durability: two replicas on one Redis, two
uvicorn workers on SQLite, and kill -9 under load followed by a restart."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
import torch

from modelshield.defense.client_state import QueenClientState
from modelshield.serve import open_state_store

from .conftest import QUEEN_ARGS, ServerProcess, Victim, add_client

NAME = "digits"
THREADS = 8


def _body(x: torch.Tensor) -> dict:
    return {"inputs": [{"name": "input", "shape": list(x.shape), "datatype": "FP32", "data": x.flatten().tolist()}]}


def _attack(urls: list[str], key: str, pool: torch.Tensor, requests: int, batch: int) -> tuple[int, list[int]]:
    """``requests`` requests of ``batch`` images from THREADS threads, alternating between ``urls``; returns the
    number of images acknowledged with a 200 and every status seen."""
    acknowledged, statuses, lock = 0, [], threading.Lock()
    client = httpx.Client(timeout=60, limits=httpx.Limits(max_connections=THREADS))  # THREADS connections: spread over workers

    def one(i: int) -> None:
        nonlocal acknowledged
        x = pool[(i * batch) % (len(pool) - batch):][:batch]
        r = client.post(f"{urls[i % len(urls)]}/v2/models/{NAME}/infer", json=_body(x), headers={"Authorization": f"Bearer {key}"})
        with lock:
            statuses.append(r.status_code)
            if r.status_code == 200:
                acknowledged += len(r.json()["outputs"][0]["data"]) // 10
    with client, ThreadPoolExecutor(THREADS) as pool_:
        list(pool_.map(one, range(requests)))
    return acknowledged, statuses


def _counts(state: str, client: str, namespace_prefix: str = "queen:") -> tuple[int, int]:
    """(the server's query count, QUEEN's per-client query count) for ``client``, read from the store."""
    store = open_state_store(state)
    try:
        count = int(store.get(f"queries:{client}") or 0)
        keys = [k for k in store.keys(namespace_prefix) if k.endswith(f":{client}")]
        queen = QueenClientState.from_bytes(store.get(keys[0]), 10).queries if keys else 0
        return count, queen
    finally:
        getattr(store, "close", lambda: None)()


def _replica_args(victim: Victim, state: str) -> list[str]:
    return [str(victim.checkpoint), "--defense", "queen", "--queen", str(victim.queen), *QUEEN_ARGS, "--state", state,
            "--model-name", NAME]


def test_two_replicas_on_one_redis_are_one_client(victim: Victim, redis_url: str, servers: list[ServerProcess]) -> None:
    key = add_client(redis_url, "mallory-r")
    tight = add_client(redis_url, "tight-r", budget=20)
    servers += [ServerProcess(_replica_args(victim, redis_url)).start(), ServerProcess(_replica_args(victim, redis_url)).start()]
    urls = [s.url for s in servers]
    acknowledged, statuses = _attack(urls, key, victim.bundle.attacker.x, requests=40, batch=4)
    assert statuses == [200] * 40 and acknowledged == 160
    assert _counts(redis_url, "mallory-r") == (160, 160)  # no lost update, in the counts nor in QUEEN's state
    answered, statuses = _attack(urls, tight, victim.bundle.attacker.x, requests=30, batch=1)
    assert answered == 20 and statuses.count(200) == 20 and statuses.count(429) == 10  # the budget holds exactly
    assert _counts(redis_url, "tight-r")[0] == 20


def test_two_workers_on_sqlite_are_one_client(victim: Victim, tmp_path, servers: list[ServerProcess]) -> None:  # type: ignore[no-untyped-def]
    state = f"sqlite:{tmp_path / 'state.db'}"
    key = add_client(state, "mallory-w")
    servers.append(ServerProcess([*_replica_args(victim, state), "--workers", "2"]).start())
    acknowledged, statuses = _attack([servers[0].url], key, victim.bundle.attacker.x, requests=40, batch=4)
    assert statuses == [200] * 40 and acknowledged == 160
    assert _counts(state, "mallory-w") == (160, 160)
    metrics = httpx.get(servers[0].url + "/metrics").text  # summed over both workers
    line = next(ln for ln in metrics.splitlines() if ln.startswith("modelshield_images_total"))
    assert float(line.split()[-1]) == 160.0


def test_kill_9_under_load_loses_no_acknowledged_answer(victim: Victim, tmp_path, servers: list[ServerProcess]) -> None:  # type: ignore[no-untyped-def]
    state = f"sqlite:{tmp_path / 'state.db'}"
    clients = [f"c{i}" for i in range(4)]
    keys = {c: add_client(state, c) for c in clients}
    server = ServerProcess(_replica_args(victim, state)).start()
    servers.append(server)
    acked = dict.fromkeys(clients, 0)
    in_doubt = dict.fromkeys(clients, 0)
    killed = threading.Event()
    pool = victim.bundle.attacker.x

    def run(client: str) -> None:
        with httpx.Client(timeout=30) as http:
            i = 0
            while not killed.is_set() or i == 0:
                x = pool[(i * 3) % 400:][:3]
                try:
                    r = http.post(f"{server.url}/v2/models/{NAME}/infer", json=_body(x), headers={"Authorization": f"Bearer {keys[client]}"})
                except httpx.HTTPError:
                    in_doubt[client] += 3  # sent, no answer: the server may or may not have committed it
                    return
                assert r.status_code == 200, r.text
                acked[client] += 3
                i += 1

    threads = [threading.Thread(target=run, args=(c,)) for c in clients]
    for t in threads:
        t.start()
    while sum(acked.values()) < 90:
        threads[0].join(0.05)
    server.kill9()
    killed.set()
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads)
    restarted = ServerProcess(_replica_args(victim, state), port=server.port).start()
    servers.append(restarted)
    for c in clients:
        count, queen = _counts(state, c)
        # every acknowledged answer is counted; a request cut off by the kill may or may not have been
        assert acked[c] <= count <= acked[c] + in_doubt[c], (c, acked[c], in_doubt[c], count)
        assert acked[c] <= queen <= count  # QUEEN saw every acknowledged query (its update follows the count)
    r = httpx.post(f"{restarted.url}/v2/models/{NAME}/infer", json=_body(pool[:2]), headers={"Authorization": f"Bearer {keys['c0']}"})
    assert r.status_code == 200
    assert _counts(state, "c0")[0] >= acked["c0"] + 2


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
