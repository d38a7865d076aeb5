"""``modelshield demo``: the zero-setup tour on scikit-learn's bundled 8x8 digits.

:func:`run_demo` trains a small LeNet-5, evaluates it, then runs every stage named in :data:`DEMO_STAGES`
on that model and prints one summary table. A stage is a module of this package (``lock``, ``defense``,
``auth``) with ``stage(ctx: DemoContext) -> list[tuple[str, str]]`` returning (metric, value) rows; adding
one is writing that module and adding its name to :data:`DEMO_STAGES`. The demo sits above the method
packages and the attacks (it uses both); they never import it.
"""

from __future__ import annotations

from modelshield.demo.context import DemoContext
from modelshield.demo.run import DEMO_STAGES, DEMO_TRAIN, run_demo

__all__ = ["DEMO_STAGES", "DEMO_TRAIN", "DemoContext", "run_demo"]
