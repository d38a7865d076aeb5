"""The ``lock`` stage of ``modelshield demo`` reports what a person should see."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from modelshield.data import load_dataset
from modelshield.demo import DEMO_STAGES, DemoContext
from modelshield.demo.lock import stage
from modelshield.models import CheckpointMeta, build_model
from modelshield.training import TrainConfig, seed_everything, torch_threads, train_model


def test_lock_stage_rows(tmp_path: Path) -> None:
    assert DEMO_STAGES[0] == "lock"
    bundle = load_dataset("digits")
    seed_everything(0)
    model = build_model("lenet5", in_channels=1, image_size=8, num_classes=10, normalization=bundle.info.normalization)
    with torch_threads(1):
        train_model(model, bundle.train, config=TrainConfig(epochs=8, batch_size=64, lr=3e-3), progress=False)
    meta = CheckpointMeta.for_model("lenet5", in_channels=1, image_size=8, num_classes=10, dataset="digits",
                                    normalization=bundle.info.normalization)
    rows = dict(stage(DemoContext(model.eval(), meta, tmp_path / "m", bundle, tmp_path, 0, True, Console(quiet=True))))
    assert rows["wrong key"] == "refused before use (MAC check)"
    assert rows["accuracy, unlocked with the key"].endswith("(bit-identical weights: yes)")
    assert float(rows["accuracy, locked file as-is"].split("%")[0]) <= 15.0
    assert rows["8 known weights vs aes-expansion"] == "master key recovered"
    assert rows["8 known weights vs ctr"] == "nothing beyond the 8 known weights"
    assert (tmp_path / "digits-lenet5.mslock").is_file()
