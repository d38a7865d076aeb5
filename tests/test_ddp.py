"""DistributedDataParallel on CPU: 2 torchrun processes give a model as good as 1 process on the same data."""

import json
import os
import subprocess
import sys

import pytest


def _train(tmp_path, processes: int) -> dict:
    out = tmp_path / f"model-{processes}.safetensors"
    args = ["-m", "modelshield", "train", "--model", "lenet5", "--dataset", "digits", "--epochs", "12",
            "--batch-size", "64", "--lr", "0.003", "--seed", "0", "--out", str(out), "--json", "--quiet"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if processes > 1:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}", *args]
    else:
        cmd = [sys.executable, *args]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    assert len(lines) == 1, "only rank 0 reports"
    return json.loads(lines[0])


@pytest.mark.slow
def test_two_process_ddp_matches_single_process(tmp_path) -> None:
    single = _train(tmp_path, 1)
    double = _train(tmp_path, 2)
    assert double["processes"] == 2 and single["processes"] == 1
    assert single["test_accuracy"] > 0.85
    assert abs(double["test_accuracy"] - single["test_accuracy"]) <= 0.03
