"""``modelshield defense fit`` and ``modelshield attack extract`` end to end on the bundled digits."""

from __future__ import annotations

import json

import pytest

from modelshield.cli import main
from modelshield.data import load_dataset
from modelshield.models import CheckpointMeta, build_model, save_checkpoint
from modelshield.training import TrainConfig, seed_everything, train_model


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):  # type: ignore[no-untyped-def]
    bundle = load_dataset("digits")
    seed_everything(0)
    model = build_model("lenet5", in_channels=1, image_size=8, num_classes=10, normalization=bundle.info.normalization)
    train_model(model, bundle.train, config=TrainConfig(epochs=4, batch_size=64, lr=3e-3), progress=False)
    meta = CheckpointMeta.for_model("lenet5", in_channels=1, image_size=8, num_classes=10, dataset="digits",
                                    normalization=bundle.info.normalization)
    return save_checkpoint(tmp_path_factory.mktemp("ck") / "digits.safetensors", model, meta)


def test_fit_then_extract_against_queen(checkpoint, tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    queen = tmp_path / "queen.safetensors"
    assert main(["defense", "fit", str(checkpoint), "--out", str(queen), "--mapping-epochs", "2", "--shadows", "3",
                 "--shadow-samples", "100", "--quiet", "--json"]) == 0
    fitted = json.loads(capsys.readouterr().out)
    assert fitted["artefacts"] == str(queen) and len(fitted["shadow_val_accuracy"]) == 3
    out = tmp_path / "result.json"
    assert main(["attack", "extract", str(checkpoint), "--defense", "queen", "--queen", str(queen),
                 "--queen-threshold-queries", "3", "--queen-shadows", "2", "--state-db", str(tmp_path / "s.db"),
                 "--budget", "300", "--labels", "hard", "--pirate-epochs", "2", "--quiet", "--json", "--out", str(out)]) == 0
    printed = json.loads(capsys.readouterr().out)
    saved = json.loads(out.read_text())
    assert printed == saved and saved["queries"] == 300 and saved["labels"] == "hard" and saved["defense"]["name"] == "queen"
    # QUEEN reversing after 3 novel queries per class holds a 300-query hard-label pirate near chance (measured 11%)
    assert saved["accuracy"] < 0.5 and isinstance(saved["fidelity"], float)


@pytest.mark.parametrize("argv, code, message", [
    (["--defense", "queen"], 3, "needs --queen FILE"),
    (["--pool", "surrogate"], 3, "no default surrogate dataset for 'digits'"),
    (["--attack", "knockof"], 3, "did you mean 'knockoff'"),
    (["--defense", "rounding", "--decimals", "12"], 3, "decimals must be in 0..8"),
])
def test_user_errors_are_one_line(checkpoint, capsys, argv, code, message) -> None:  # type: ignore[no-untyped-def]
    assert main(["attack", "extract", str(checkpoint), "--budget", "50", "--quiet", *argv]) == code
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and "\n" not in err
