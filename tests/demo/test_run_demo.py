from rich.console import Console

from modelshield.demo import run_demo


def test_demo_trains_a_useful_model_and_reports_every_stage() -> None:
    console = Console(record=True, width=120)
    rows = run_demo(seed=0, quiet=True, console=console)
    accuracy = next(value for stage, metric, value in rows if metric == "test accuracy")
    assert float(accuracy.split("%")[0]) > 90.0
    assert "modelshield demo summary" in console.export_text()
