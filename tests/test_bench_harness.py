import json

from modelshield.bench.harness import BenchContext, SuiteReport, run_suite
from modelshield.training import TrainConfig


class _Suite:
    calls = 0

    @classmethod
    def run(cls, ctx: BenchContext) -> SuiteReport:
        def work():
            cls.calls += 1
            return {"value": 42}

        value = ctx.cell("answer", work)
        return SuiteReport(results={"answer": value}, markdown="| a |\n|---|\n| 1 |")


def test_cells_are_cached_and_results_recorded(tmp_path) -> None:
    ctx = BenchContext("toy", root=tmp_path, progress=False)
    paths = run_suite(_Suite, ctx, ["modelshield", "bench", "toy"])
    run_suite(_Suite, BenchContext("toy", root=tmp_path, progress=False), ["modelshield", "bench", "toy"])
    assert _Suite.calls == 1, "the second run resumes from the cache"
    doc = json.loads(paths["json"].read_text())
    assert doc["results"] == {"answer": {"value": 42}}
    for field in ("command", "seed", "versions", "machine", "wall_seconds", "started"):
        assert field in doc
    assert "torch" in doc["versions"] and doc["machine"]["cores"]
    assert "modelshield bench toy" in paths["md"].read_text()
    assert (doc["cells_computed"], doc["cells_reused"]) == (0, 1), "the file is the resumed run's"
    assert "0 cells computed in this run, 1 reused" in paths["md"].read_text()
    run_suite(_Suite, BenchContext("toy", root=tmp_path, progress=False, fresh=True), ["x"])
    assert _Suite.calls == 2, "--fresh recomputes"
    fresh = json.loads(paths["json"].read_text())
    assert (fresh["cells_computed"], fresh["cells_reused"]) == (1, 0) and "reused" not in paths["md"].read_text()


def test_trained_models_are_shared(tmp_path) -> None:
    config = TrainConfig(epochs=1, batch_size=64)
    first, record = BenchContext("a", root=tmp_path, progress=False).trained_model("lenet5", "digits", config)
    again, record2 = BenchContext("b", root=tmp_path, progress=False).trained_model("lenet5", "digits", config)
    assert record == record2 and record["train_images"] == 839
    assert all((a == b).all() for a, b in zip(first.model.state_dict().values(), again.model.state_dict().values()))
