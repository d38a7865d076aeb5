"""MEA-Defender end to end over real HTTP: a watermarked model served by ``modelshield serve`` is verified through
its API (``modelshield watermark verify --url``), and a pirate extracted through the same API is verified too.

The served verification must give exactly the labels (hence hits) of a local verification with the same seeds:
the API only transports the model's answers. Whether the pirate inherits the watermark is the benchmark's question
(``modelshield bench watermark``); here the pirate's report must agree with a direct count on the pirate and the
pirate must have learnt the victim (so the test fails if extraction over HTTP silently breaks).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from modelshield.attacks.extraction import PirateConfig, QueryPool, build_attack, train_pirate
from modelshield.cli import main
from modelshield.data import load_dataset
from modelshield.models import CheckpointMeta, build_model, load_checkpoint, save_checkpoint
from modelshield.oracle import HttpOracle
from modelshield.training import seed_everything
from modelshield.watermark import VerifyConfig, WatermarkConfig, WatermarkKey, count_target, embed_watermark, verify_watermark

from .conftest import ServerProcess, add_client

NAME = "digits-wm"
# 8x8 digits: a weaker watermark than on 28x28 images (see tests/watermark/test_embed_verify.py), hence the margin
VERIFY = ["--samples", "400", "--evasion-samples", "100", "--wfpr-margin", "0.15", "--json", "--quiet"]
EMBED = WatermarkConfig.from_scratch(epochs=20, lr=3e-3, batch_size=64)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, object]]:
    """A digits LeNet-5 watermarked from scratch, its key file (0600), and a server for it with two clients."""
    tmp = tmp_path_factory.mktemp("wm-http")
    bundle = load_dataset("digits")
    info = bundle.info
    key = WatermarkKey.for_dataset("digits", seed=0)
    seed_everything(0)
    model = build_model("lenet5", in_channels=1, image_size=8, num_classes=10, normalization=info.normalization)
    embed_watermark(model, bundle.train, key, val=bundle.val, config=EMBED, reference_accuracy=0.9, progress=False)
    model.eval()
    meta = CheckpointMeta.for_model("lenet5", in_channels=1, image_size=8, num_classes=10, dataset="digits",
                                    normalization=info.normalization)
    checkpoint = save_checkpoint(tmp / "wm.safetensors", model, meta)
    key_file = key.save(tmp / "wm.key")
    state = f"sqlite:{tmp / 'state.db'}"
    keys = {"owner": add_client(state, "owner", output="label"), "thief": add_client(state, "thief", budget=10**6)}
    proc = ServerProcess([str(checkpoint), "--defense", "none", "--state", state, "--model-name", NAME,
                          "--max-images", "64"]).start()
    try:
        yield {"url": proc.url, "keys": keys, "checkpoint": Path(checkpoint), "key": key, "key_file": Path(key_file),
               "bundle": bundle}
    finally:
        proc.stop()


def _verify(capsys: pytest.CaptureFixture[str], *argv: str) -> dict[str, object]:
    code = main(["watermark", "verify", *argv])
    out = capsys.readouterr().out
    assert code == 0, out
    return json.loads(out.strip().splitlines()[-1])  # type: ignore[no-any-return]


def test_served_watermarked_model_is_verified_over_http(served, capsys, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("MODELSHIELD_API_KEY", served["keys"]["owner"])  # a label-only client is enough to verify
    remote = _verify(capsys, "--url", served["url"], "--model-name", NAME, "--key-file", str(served["key_file"]), *VERIFY)
    local = _verify(capsys, str(served["checkpoint"]), "--key-file", str(served["key_file"]), *VERIFY)
    assert remote["verdict"] is True and remote["p_value"] < 1e-6
    assert (remote["hits"], remote["evasion_hits"]) == (local["hits"], local["evasion_hits"])
    assert served["keys"]["owner"] not in json.dumps(remote)


def test_pirate_extracted_through_the_api_is_verified(served) -> None:  # type: ignore[no-untyped-def]
    bundle, key = served["bundle"], served["key"]
    oracle = HttpOracle(served["url"], NAME, api_key=served["keys"]["thief"], batch_size=64)
    transcript = build_attack("distillation", budget=len(bundle.attacker), seed=0).collect(
        oracle, QueryPool(bundle.attacker.x, "attacker"))
    assert len(transcript) == len(bundle.attacker) and oracle.queries == len(bundle.attacker)
    pirate = train_pirate(transcript.x, transcript.answers, PirateConfig(seed=0, epochs=30))
    victim = load_checkpoint(served["checkpoint"]).model.eval()
    with torch.no_grad():
        agreement = (pirate(bundle.test.x).argmax(1) == victim(bundle.test.x).argmax(1)).float().mean().item()
    assert agreement >= 0.8, f"the pirate did not learn the served victim (agreement {agreement:.2f})"
    config = VerifyConfig(samples=400, evasion_samples=100, wfpr_margin=0.15)
    report = verify_watermark(pirate, bundle.test, key, config=config)
    assert report.hits == count_target(pirate, bundle.test, key, samples=400, seed=config.seed)
    assert report.samples == 400 and 0.0 <= report.wsr <= 1.0 and isinstance(report.verdict, bool)
