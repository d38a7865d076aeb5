"""Demo stage ``defense``: QUEEN against a soft-label KnockoffNets attacker on the bundled digits.

Fits QUEEN for the demo model, lets one client spend the digits ``attacker`` split as queries against the
undefended and the QUEEN-defended model, trains a pirate on each transcript, and reports both pirates'
accuracy and what benign clients (small sessions on the test split) see.
"""

from __future__ import annotations

from modelshield.attacks.extraction import PirateConfig, QueryPool, build_attack, run_extraction
from modelshield.defense.baselines import NoDefense
from modelshield.defense.metrics import benign_report
from modelshield.defense.protected import ClientPolicy, ProtectedModel
from modelshield.defense.queen import QueenConfig, QueenDefense
from modelshield.defense.queen_artifacts import load_queen_artifacts
from modelshield.defense.queen_fit import DIGITS_FIT, fit_queen
from modelshield.demo.context import DemoContext
from modelshield.oracle import ModelOracle

__all__ = ["stage"]

DEMO_FIT = DIGITS_FIT
DEMO_ONLINE = QueenConfig(novelty_radius=0.001, threshold_queries=5)
BENIGN_SESSION = 20


def stage(ctx: DemoContext) -> list[tuple[str, str]]:
    """Run the stage; returns (metric, value) rows."""
    bundle, model = ctx.bundle, ctx.model
    path = fit_queen(model, bundle.train, config=DEMO_FIT, val=bundle.val).save(ctx.workdir / "queen.safetensors")
    art = load_queen_artifacts(path)
    pool = QueryPool(bundle.attacker.x, "digits/attacker")
    budget = len(pool)
    pirate = PirateConfig(epochs=30, batch_size=32, lr=3e-3, seed=ctx.seed)
    rows, results = [], {}
    for name in ("none", "queen"):
        defense = QueenDefense.for_model(model, art, DEMO_ONLINE) if name == "queen" else NoDefense()
        oracle = ModelOracle(ProtectedModel(model, defense), client_id="mallory", policy=ClientPolicy(budget=budget))
        results[name] = run_extraction(build_attack("knockoff", budget=budget, seed=ctx.seed), oracle, pool, bundle.test,
                                       victim=model, pirate=pirate)
        if isinstance(defense, QueenDefense):
            reversed_share = float(defense.client_state("mallory").reversed.sum()) / budget
    queen = ProtectedModel(model, QueenDefense.for_model(model, art, DEMO_ONLINE))
    benign = benign_report(lambda client: ModelOracle(queen, client_id=client), bundle.test, model=model,
                           queries_per_client=BENIGN_SESSION)
    rows.append(("pirate accuracy, undefended", f"{100 * results['none'].accuracy:.1f}% ({budget} soft-label queries)"))
    rows.append(("pirate accuracy, QUEEN", f"{100 * results['queen'].accuracy:.1f}% ({100 * reversed_share:.0f}% of answers reversed)"))
    rows.append(("benign accuracy, QUEEN", f"{100 * benign.accuracy:.1f}% (model {100 * benign.undefended_accuracy:.1f}%; "
                                            f"clients of {BENIGN_SESSION} queries, mean L1 {benign.l1_distortion:.3f})"))
    return rows
