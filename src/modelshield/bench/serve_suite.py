"""Suite ``serve``: throughput and latency of the real server, undefended vs QUEEN, on SQLite and on Redis.

QUEEN is measured as configured by default and in its sybil-resistant mode (``queen-pool``: every bench
client is young, so each batch also updates the shared pool, the worst case for contention).

Victim: LeNet-5 on the bundled 8x8 digits (trained once, shared through ``bench/cache/models``), its QUEEN
artefacts fitted with the demo's settings (cached in this suite's cache folder). For each state store
(SQLite file; a private ``redis-server`` on loopback with ``appendfsync always``) and defense (``none``,
``queen``), one ``modelshield serve`` process is started on a free loopback port with 32 registered clients.
A load generator in this process (asyncio + httpx, one connection per client) runs 32 concurrent clients,
each sending requests of 1 or 64 images back to back for a fixed time (after a short warm-up), each client
cycling through its own slice of the digits attacker split. Recorded per cell: requests/s, images/s,
p50/p99 latency, errors (any non-200 or transport error). Goal: QUEEN >= 0.7x the undefended throughput,
0 errors, on both stores and both request sizes.

Timings are measured in one run (never reused from the cache: only the model and the artefacts are cached),
with the load average before and after every cell: on a shared machine the server, the load generator and
other jobs compete for the same cores, so the absolute figures are this machine's, and the ratios the point.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from modelshield.bench.harness import BenchContext, Criterion, SuiteReport, markdown_table
from modelshield.training import TrainConfig

__all__ = ["CLIENTS", "GOAL_RATIO", "run"]

CLIENTS = 32
BATCHES = (1, 64)
DEFENSES = ("none", "queen", "queen-pool")
GOAL_RATIO = 0.7
DIGITS_TRAIN = TrainConfig(epochs=30, batch_size=64, lr=3e-3, schedule="cosine")
QUEEN_ARGS = ["--queen-radius", "0.001", "--queen-threshold-queries", "5"]  # the demo's online settings
# the sybil-resistant mode on top (the extraction suite's queen-pool: 1,000 queries make a client established, the
# young clients' pool has the same per-class threshold, hour-long windows); every bench client stays young here
POOL_ARGS = ["--queen-young-queries", "1000", "--queen-pool-threshold", "5", "--queen-window", "3600"]
NAME = "digits"


def _load() -> list[float] | None:
    return [round(v, 2) for v in os.getloadavg()] if hasattr(os, "getloadavg") else None


class _Server:
    def __init__(self, args: list[str]) -> None:
        import socket

        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = int(sock.getsockname()[1])
        self.url = f"http://127.0.0.1:{self.port}"
        src = str(Path(__file__).resolve().parents[2])
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")]), "OMP_NUM_THREADS": "1"}
        self.log = tempfile.NamedTemporaryFile(prefix="ms-bench-serve-", suffix=".log", delete=False)  # noqa: SIM115
        self.process = subprocess.Popen([sys.executable, "-m", "modelshield", "serve", *args, "--port", str(self.port),  # noqa: S603
                                         "--log-level", "warning"], stdout=self.log, stderr=subprocess.STDOUT, env=env)

    def wait(self, timeout: float = 180.0) -> None:
        import httpx

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited: {Path(self.log.name).read_text()[-2000:]}")
            try:
                if httpx.get(self.url + "/v2/health/ready", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError("server did not become ready")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        Path(self.log.name).unlink(missing_ok=True)


async def _load_run(url: str, keys: list[str], bodies: list[list[bytes]], batch: int, seconds: float,
                    warmup: float) -> dict[str, Any]:
    import httpx

    latencies: list[float] = []
    errors = 0
    kinds: dict[str, int] = {}
    counted = 0
    start = time.perf_counter()
    begin, end = start + warmup, start + warmup + seconds
    async with httpx.AsyncClient(timeout=120, limits=httpx.Limits(max_connections=len(keys))) as http:
        async def client(i: int) -> None:
            nonlocal errors, counted
            headers = {"Authorization": f"Bearer {keys[i]}", "Content-Type": "application/json"}
            own, j = bodies[i], 0
            while True:
                t0 = time.perf_counter()
                if t0 >= end:
                    return
                try:
                    r = await http.post(f"{url}/v2/models/{NAME}/infer", content=own[j % len(own)], headers=headers)
                    ok, kind = r.status_code == 200, f"HTTP {r.status_code}"
                except httpx.HTTPError as exc:
                    ok, kind = False, type(exc).__name__
                t1 = time.perf_counter()
                j += 1
                if begin <= t1 <= end:  # completions inside the window (each client keeps one request in flight)
                    counted += 1
                    latencies.append(t1 - t0)
                    errors += not ok
                    if not ok:
                        kinds[kind] = kinds.get(kind, 0) + 1

        await asyncio.gather(*(client(i) for i in range(len(keys))))
    latencies.sort()
    n = len(latencies)
    good = n - errors
    return {"requests": n, "errors": errors, "error_kinds": kinds, "requests_per_s": good / seconds, "images_per_s": good * batch / seconds,
            "p50_ms": 1000 * latencies[n // 2] if n else None,
            "p99_ms": 1000 * latencies[min(n - 1, int(0.99 * n))] if n else None,
            "mean_ms": 1000 * statistics.fmean(latencies) if n else None}


def _bodies(pool: Any, batch: int, clients: int, per_client: int) -> list[list[bytes]]:
    import json

    out = []
    for i in range(clients):
        own = []
        for j in range(per_client):
            start = ((i * per_client + j) * batch) % max(1, len(pool) - batch)
            x = pool[start : start + batch]
            own.append(json.dumps({"inputs": [{"name": "input", "shape": list(x.shape), "datatype": "FP32",
                                               "data": [round(v, 6) for v in x.flatten().tolist()]}]}).encode())
        out.append(own)
    return out


def run(ctx: BenchContext) -> SuiteReport:
    """Start each server configuration, load it, and compare QUEEN with the undefended server."""
    from modelshield.defense.queen_fit import fit_queen
    from modelshield.defense.queen_fit import DIGITS_FIT as DEMO_FIT
    from modelshield.models import save_checkpoint
    from modelshield.serve import ClientRegistry, open_state_store

    seconds, warmup = (4.0, 2.0) if ctx.quick else (15.0, 3.0)
    checkpoint, record = ctx.trained_model("lenet5", "digits", DIGITS_TRAIN)
    bundle = ctx.dataset("digits")
    ctx.cache_dir.mkdir(parents=True, exist_ok=True)
    model_path = save_checkpoint(ctx.cache_dir / "victim.safetensors", checkpoint.model, checkpoint.meta)
    queen_path = ctx.cache_dir / f"queen-{record['seed']}.safetensors"
    if not queen_path.exists():
        fit_queen(checkpoint.model, bundle.train, config=DEMO_FIT, val=bundle.val).save(queen_path)
    pool = bundle.attacker.x
    bodies = {b: _bodies(pool, b, CLIENTS, 8 if b == 64 else 16) for b in BATCHES}

    stores: list[tuple[str, str | None]] = []
    redis = None
    try:
        from modelshield.state_redis import RedisServer

        redis = RedisServer().start()
        stores.append(("redis", redis.url))
    except Exception as exc:  # not installed: report it instead of failing the suite
        ctx.console.log(f"serve: Redis cells skipped ({exc})")
    workdir = Path(tempfile.mkdtemp(prefix="ms-bench-serve-"))
    stores.insert(0, ("sqlite", None))
    cells: list[dict[str, Any]] = []
    try:
        for store_name, redis_url in stores:
            for defense in DEFENSES:
                state = redis_url if redis_url else f"sqlite:{workdir / f'{defense}.db'}"
                if redis_url:  # a clean database per configuration
                    import redis as redis_py

                    redis_py.Redis.from_url(redis_url).flushdb()
                store = open_state_store(state)
                registry = ClientRegistry(store)
                keys = [registry.add(f"bench-{i}")[1] for i in range(CLIENTS)]
                getattr(store, "close", lambda: None)()
                args = [str(model_path), "--defense", defense.split("-")[0], "--state", state, "--model-name", NAME]
                if defense.startswith("queen"):
                    args += ["--queen", str(queen_path), *QUEEN_ARGS, *(POOL_ARGS if defense == "queen-pool" else [])]
                server = _Server(args)
                try:
                    server.wait()
                    for batch in BATCHES:
                        ctx.console.log(f"[bold]serve[/]: {store_name} / {defense} / {batch} image(s) per request")
                        load_before = _load()
                        result = asyncio.run(_load_run(server.url, keys, bodies[batch], batch, seconds, warmup))
                        cells.append({"store": store_name, "defense": defense, "batch": batch, **result,
                                      "load_before": load_before, "load_after": _load()})
                finally:
                    server.stop()
    finally:
        if redis is not None:
            redis.stop()
    results = _summarise(cells, seconds)
    results["victim"] = {"model": "lenet5", "dataset": "digits", "test_accuracy": record["test_accuracy"]}
    criteria = []
    for r in results["ratios"]:
        where = f"{r['store']}, {r['batch']} image(s) per request"
        criteria.append(Criterion(f"{r['defense']} / undefended requests per second ({where})", r["queen_over_none"], GOAL_RATIO,
                                  ">=", unit="x"))
    for c in cells:
        criteria.append(Criterion(f"errors ({c['store']}, {c['defense']}, {c['batch']} image(s) per request)", c["errors"], 0, "=="))
    return SuiteReport(results=results, markdown=_markdown(results), figures={"latency": _figure(cells)}, criteria=criteria,
                       criteria_note="Throughput ratios measured back to back in this run on a shared, loaded machine "
                                     "(load averages in the table).")


def _summarise(cells: list[dict[str, Any]], seconds: float) -> dict[str, Any]:
    ratios = []
    for cell in cells:
        if cell["defense"] == "none":
            continue
        base = next(c for c in cells if c["store"] == cell["store"] and c["batch"] == cell["batch"] and c["defense"] == "none")
        ratio = cell["requests_per_s"] / base["requests_per_s"] if base["requests_per_s"] else None
        ratios.append({"store": cell["store"], "defense": cell["defense"], "batch": cell["batch"], "queen_over_none": ratio,
                       "met": ratio is not None and ratio >= GOAL_RATIO and cell["errors"] == 0 and base["errors"] == 0})
    return {"clients": CLIENTS, "seconds_per_cell": seconds, "goal_ratio": GOAL_RATIO, "cells": cells, "ratios": ratios,
            "goal_met": bool(ratios) and all(r["met"] for r in ratios)}


def _markdown(results: dict[str, Any]) -> str:
    def f(v: Any, digits: int = 1) -> str:
        return "-" if v is None else f"{v:.{digits}f}"

    rows = [[c["store"], c["defense"], c["batch"], f(c["requests_per_s"]), f(c["images_per_s"], 0), f(c["p50_ms"]),
             f(c["p99_ms"]), c["errors"], f"{c['load_before'][0]:.1f} -> {c['load_after'][0]:.1f}" if c["load_before"] else "-"]
            for c in results["cells"]]
    errors = [f"{c['store']} / {c['defense']} / {c['batch']}: " + ", ".join(f"{k} x{v}" for k, v in c["error_kinds"].items())
              for c in results["cells"] if c["error_kinds"]]
    ratio_rows = [[r["store"], r.get("defense", "queen"), r["batch"], f(r["queen_over_none"], 2), "yes" if r["met"] else "no"]
                  for r in results["ratios"]]
    return "\n".join([
        f"## Throughput and latency ({results['clients']} concurrent clients, {results['seconds_per_cell']:.0f} s per cell, loopback)", "",
        markdown_table(["store", "defense", "images/request", "requests/s", "images/s", "p50 ms", "p99 ms", "errors",
                        "load (1 min) before -> after"], rows), "",
        *([f"Errors: {'; '.join(errors)}.", ""] if errors else []),
        f"## QUEEN against the undefended server (goal: >= {results['goal_ratio']}x requests/s, 0 errors)", "",
        markdown_table(["store", "defense", "images/request", "defense / none", "goal met"], ratio_rows), "",
        f"Goal met in every cell: {'yes' if results['goal_met'] else 'no'}. Server, load generator and other jobs share "
        "this machine's cores (see the load column): absolute figures are this machine's under that load; the ratios, "
        "measured back to back in one run, are the comparison.",
    ])


def _figure(cells: list[dict[str, Any]]) -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(BATCHES), figsize=(5.2 * len(BATCHES), 3.6), squeeze=False)
    for ax, batch in zip(axes[0], BATCHES, strict=True):
        group = [c for c in cells if c["batch"] == batch]
        labels = [f"{c['store']}\n{c['defense']}" for c in group]
        xs = range(len(group))
        ax.bar([x - 0.2 for x in xs], [c["p50_ms"] or 0 for c in group], width=0.4, label="p50")
        ax.bar([x + 0.2 for x in xs], [c["p99_ms"] or 0 for c in group], width=0.4, label="p99")
        ax.set_xticks(list(xs), labels)
        ax.set_ylabel("latency (ms)")
        ax.set_title(f"{batch} image(s) per request, {CLIENTS} clients")
        ax.legend()
    fig.tight_layout()
    return fig
