"""Benchmark suites: ``modelshield bench <suite> [--quick]`` writes bench/results/<suite>.{json,md,png}."""

from __future__ import annotations

import importlib
from types import ModuleType

from modelshield.errors import ConfigError, did_you_mean

__all__ = ["SUITES", "load_suite"]

# suite name -> module with run(ctx) -> SuiteReport (imported lazily: suites pull in heavy code)
SUITES: dict[str, str] = {
    "train": "modelshield.bench.train_suite",
    "lock": "modelshield.bench.lock_suite",
    "extraction": "modelshield.bench.extraction_suite",
    "auth": "modelshield.bench.auth_suite",
    "serve": "modelshield.bench.serve_suite",
    "watermark": "modelshield.bench.watermark_suite",
}


def load_suite(name: str) -> ModuleType:
    """Import a suite module by name."""
    if name not in SUITES:
        raise ConfigError(f"unknown benchmark suite {name!r}{did_you_mean(name, SUITES)}; known: {', '.join(SUITES)}")
    return importlib.import_module(SUITES[name])
