"""Serving fixtures: a tiny digits victim with QUEEN artefacts, a private Redis, and real server processes.

Servers run as ``python -m modelshield serve`` subprocesses on a free loopback port, with this checkout's
``src`` first on ``PYTHONPATH``; every one is stopped (and its log shown on failure) at teardown.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import torch

from modelshield.data import load_dataset
from modelshield.data.types import DatasetBundle
from modelshield.defense.queen_fit import QueenFitConfig, fit_queen
from modelshield.models import CheckpointMeta, build_model, save_checkpoint
from modelshield.training import TrainConfig, seed_everything, train_model

SRC = Path(__file__).resolve().parents[2] / "src"
# QUEEN settings of the served test model: reverse after 10 novel in-region points per class
QUEEN_ARGS = ["--queen-radius", "0.001", "--queen-threshold-queries", "10"]


@dataclass(frozen=True)
class Victim:
    """The served model's files and data."""

    checkpoint: Path
    queen: Path
    model: torch.nn.Module
    bundle: DatasetBundle


@pytest.fixture(scope="session")
def victim(tmp_path_factory: pytest.TempPathFactory) -> Victim:
    """LeNet-5 on the bundled 8x8 digits (a few seconds) and its QUEEN artefacts."""
    bundle = load_dataset("digits")
    info = bundle.info
    seed_everything(0)
    model = build_model("lenet5", in_channels=1, image_size=8, num_classes=10, normalization=info.normalization)
    train_model(model, bundle.train, config=TrainConfig(epochs=15, batch_size=64, lr=3e-3, seed=0), progress=False)
    model.eval()
    folder = tmp_path_factory.mktemp("victim")
    meta = CheckpointMeta.for_model("lenet5", in_channels=1, image_size=8, num_classes=10, dataset="digits",
                                    normalization=info.normalization)
    ckpt = save_checkpoint(folder / "digits.safetensors", model, meta)
    fit = QueenFitConfig(mapping_epochs=10, mapping_batch_size=256, num_shadows=5, shadow_samples=150, shadow_lr=3e-3, seed=0)
    queen = fit_queen(model, bundle.train, config=fit).save(folder / "queen.safetensors")
    return Victim(Path(ckpt), Path(queen), model, bundle)


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """A private redis-server on a free loopback port (appendonly, appendfsync always; data in a tmp dir)."""
    from modelshield.state_redis import RedisServer

    try:
        server = RedisServer().start()
    except Exception as exc:  # not installed, or cannot start here
        pytest.skip(f"redis-server unavailable ({exc}); install it: apt-get install redis-server")
    try:
        yield server.url
    finally:
        server.stop()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ServerProcess:
    """One ``modelshield serve`` subprocess."""

    def __init__(self, args: list[str], *, port: int | None = None, env: dict[str, str] | None = None) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.args = args
        self.log = Path(tempfile.mkstemp(prefix="ms-serve-", suffix=".log")[1])
        self.env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]),
                    "OMP_NUM_THREADS": "1", **(env or {})}
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 120.0) -> ServerProcess:
        cmd = [sys.executable, "-m", "modelshield", "serve", *self.args, "--port", str(self.port), "--log-level", "warning"]
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=self.env, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}:\n{self.log.read_text()[-3000:]}")
            try:
                if httpx.get(self.url + "/v2/health/ready", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"server not ready after {timeout} s:\n{self.log.read_text()[-3000:]}")

    def kill9(self) -> None:
        """SIGKILL the whole process group (workers included): no shutdown code runs."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill9()

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None


@pytest.fixture
def servers() -> Iterator[list[ServerProcess]]:
    """Servers started by a test (append them); all stopped at teardown."""
    started: list[ServerProcess] = []
    yield started
    for server in started:
        server.stop()


def add_client(state: str, client_id: str, **spec: object) -> str:
    """Register a client in the server's store (as `modelshield clients add` does); returns its API key."""
    from modelshield.serve import ClientRegistry, ClientSpec, open_state_store

    store = open_state_store(state)
    try:
        return ClientRegistry(store).add(client_id, ClientSpec(**spec))[1]  # type: ignore[arg-type]
    finally:
        getattr(store, "close", lambda: None)()
