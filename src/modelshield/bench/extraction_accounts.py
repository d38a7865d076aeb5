"""The extraction suite's real-world grid: many accounts, heavy honest clients, foreign pools, adaptive attackers.

Victim, pool, attack and pirate are the main grid's (LeNet-5 on MNIST, KnockoffNets with random query selection
from the ``attacker`` split, 20,000 soft-label queries, a fresh LeNet-5 pirate per transcript). What changes is
who asks and how the defense is configured:

* **Sybils.** The same 20,000 queries split over 1, 2, 4, 10, 100 and 1,000 client ids, in contiguous chunks
  and round-robin; one pirate on the union. Against QUEEN as the paper runs it (state per client) and against
  the sybil-resistant mode (:data:`VARIANTS` ``queen-pool``: young clients share one pooled state).
* **Heavy honest clients.** What an honest client sees at 100, 1,000 and 10,000 queries under each policy: a
  tier (``ClientPolicy.allowance``, derived on the validation split, see :func:`derive_tier`), a trusted client,
  coverage that starts over every window, label-preserving REVERSE; and what an attacker gets from each.
* **Established clients.** A customer with a tier and 1,000 queries of history in an earlier window sends
  1,000 test queries: under QUEEN with windows, and under the sybil-resistant mode (whose pool never touches an
  established client).
* **Foreign pools.** Fashion-MNIST images (the surrogate pool) and uniform noise sent to the MNIST model, with
  QUEEN's out-of-region queries answered by reverse sigmoid (``queen-outside-rs``).
* **Adaptive attackers.** One that drops answers it believes were reversed (by their shape: a softmax has no
  exact zeros; or by disagreement with a pirate trained on its first 1,000 answers), one that paces its queries
  under any per-client threshold (new account every :data:`PACE` queries, or one account and a new time
  window every :data:`PACE` queries).

Time is simulated (:class:`SimClock`), so a window costs no wall time. Every cell is cached by the harness.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, replace
from typing import Any

import torch

from modelshield.attacks.extraction import (
    FilterConfig,
    PacedOracle,
    QueryPool,
    SybilOracle,
    Transcript,
    build_attack,
    filter_transcript,
    query_pool,
)
from modelshield.bench.extraction_cells import Recording, onehot, pct, pirate_cell
from modelshield.bench.harness import BenchContext, Criterion, markdown_table
from modelshield.data import DatasetBundle
from modelshield.defense import (
    ClientPolicy,
    Defense,
    ProtectedModel,
    QueenArtifacts,
    QueenConfig,
    QueenDefense,
    benign_report,
    build_defense,
)
from modelshield.oracle import ModelOracle
from modelshield.state import InMemoryStateStore

__all__ = ["BUDGET", "PACE", "SYBIL_ACCOUNTS", "VARIANTS", "SimClock", "derive_tier", "run_accounts"]

DATASET = "mnist"
BUDGET = 20_000
SYBIL_ACCOUNTS = (1, 2, 4, 10, 100, 1000)
SYBIL_ACCOUNTS_QUICK = (1, 10, 100)
SYBIL_MODES = ("contiguous", "round-robin")
WINDOW = 3600.0  # simulated seconds of one coverage window
PACE = 400  # the pacing attacker's queries per account or per window: 40 per class, under the 50-per-class threshold
TIER_MARGIN = 1.25  # tier = this x the most novel in-region queries of one class that 1,000 validation queries make
HONEST_SIZES = (100, 1000, 10_000)
BASE = QueenConfig()  # the library default, which the main grid measures as "queen"
VARIANTS: dict[str, QueenConfig] = {
    "queen": BASE,
    "queen-pool": replace(BASE, young_client_queries=1000, pool_threshold_queries=50, window_seconds=WINDOW),
    "queen-window": replace(BASE, window_seconds=WINDOW),
    "queen-keep-label": replace(BASE, reverse_keeps_label=True),
    "queen-outside-rs": replace(BASE, out_of_region="reverse-sigmoid"),
}


class SimClock:
    """A simulated clock: ``clock()`` reads it, ``clock.wait(seconds)`` moves it on."""

    def __init__(self, start: float = 0.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def wait(self, seconds: float) -> None:
        """Advance by ``seconds``."""
        self.now += seconds


class _Setup:
    """What every cell of this grid shares: the victim, QUEEN's artefacts, the data, the cache keys."""

    def __init__(self, ctx: BenchContext, model: torch.nn.Module, art: QueenArtifacts, bundle: DatasetBundle,
                 upstream: dict[str, str], budget: int) -> None:
        self.ctx, self.model, self.art, self.bundle, self.upstream = ctx, model, art, bundle, upstream
        self.budget = budget
        self.pools: dict[str, QueryPool] = {}
        self.transcripts: dict[str, tuple[Transcript, torch.Tensor]] = {}

    def pool(self, kind: str) -> QueryPool:
        if kind not in self.pools:
            self.pools[kind] = query_pool(DATASET, kind, self.ctx.data_root, seed=self.ctx.seed)
        return self.pools[kind]

    def defense(self, name: str, clock: SimClock) -> Defense:
        if name in VARIANTS:
            return QueenDefense.for_model(self.model, self.art, VARIANTS[name], store=InMemoryStateStore(), clock=clock)
        return build_defense(name, **({"seed": self.ctx.seed} if name == "gaussian" else {}))

    def settings(self, name: str) -> dict[str, Any]:
        return {"name": name, "online": asdict(VARIANTS[name])} if name in VARIANTS else build_defense(name).describe()

    def truth(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return torch.cat([torch.softmax(self.model(x[i : i + 1024]), 1) for i in range(0, len(x), 1024)])

    def collect(self, defense_name: str, pool: str = "attacker", *,
                route: Callable[[Callable[[str], ModelOracle], SimClock], Any] | None = None,
                policy: ClientPolicy | None = None) -> tuple[Transcript, torch.Tensor, dict[str, Any]]:
        """KnockoffNets' 20k queries against a fresh protected model, routed by ``route`` (default: one account)."""
        clock = SimClock()
        recorder = Recording(self.defense(defense_name, clock))
        protected = ProtectedModel(self.model, recorder, max_batch=256)

        def account(client_id: str) -> ModelOracle:
            return ModelOracle(protected, client_id=client_id, policy=policy, batch_size=256)

        oracle = route(account, clock) if route is not None else account("attacker")
        transcript = build_attack("knockoff", budget=self.budget, seed=self.ctx.seed).collect(oracle, self.pool(pool))
        info: dict[str, Any] = {}
        for attr in ("accounts_used", "windows_used"):
            if hasattr(oracle, attr):
                info[attr] = getattr(oracle, attr)
        return transcript, torch.cat(recorder.flags), info

    def pirate(self, transcript: Transcript, flags: torch.Tensor) -> dict[str, Any]:
        return pirate_cell(self.ctx, transcript, flags, self.truth(transcript.x), self.bundle, self.model, self.upstream)

    def cell(self, name: str, fn: Callable[[], dict[str, Any]], **config: Any) -> dict[str, Any]:
        attack = build_attack("knockoff", budget=self.budget, seed=self.ctx.seed).config  # type: ignore[attr-defined]
        return self.ctx.cell(f"accounts/{name}", fn, upstream=self.upstream,
                             config={"attack": attack, "budget": self.budget, **config})


def derive_tier(model: torch.nn.Module, art: QueenArtifacts, val_x: torch.Tensor, queries: int = 1000,
                margin: float = TIER_MARGIN) -> dict[str, Any]:
    """The tier (``ClientPolicy.allowance``) for customers sending ``queries`` at once, from the validation split.

    One client that is never reversed sends the first ``queries`` validation images to QUEEN (default
    settings); the most novel in-region queries it made in one class, times ``margin``, is the tier.
    """
    defense = QueenDefense.for_model(model, art, BASE, store=InMemoryStateStore())
    ModelOracle(ProtectedModel(model, defense), client_id="probe", policy=ClientPolicy(allowance=10**9),
                batch_size=256)(val_x[:queries])
    counts = defense.client_state("probe").counts
    return {"queries": queries, "margin": margin, "max_class_count": int(counts.max()), "counts": counts.tolist(),
            "allowance": math.ceil(margin * int(counts.max()))}


def run_accounts(ctx: BenchContext, model: torch.nn.Module, art: QueenArtifacts, bundle: DatasetBundle,
                 upstream: dict[str, str], budget: int = BUDGET) -> dict[str, Any]:
    """Every cell of this grid; returns the JSON-able results (see the module docstring)."""
    s = _Setup(ctx, model, art, bundle, upstream, budget)
    accounts = SYBIL_ACCOUNTS_QUICK if ctx.quick else SYBIL_ACCOUNTS
    out: dict[str, Any] = {"budget": budget, "accounts": list(accounts), "window_seconds": WINDOW, "pace": PACE,
                           "variants": {k: asdict(v) for k, v in VARIANTS.items()}}
    tier = ctx.cell("accounts/tier", lambda: derive_tier(model, art, bundle.val.x), upstream=upstream,
                    config={"queen": BASE, "queries": 1000, "margin": TIER_MARGIN, "split": "val"})
    out["tier"] = tier
    allowance = int(tier["allowance"])

    # -- sybils: one pirate on the union of the accounts' answers -------------------------------------------
    sybil: dict[str, Any] = {}
    for variant in ("queen", "queen-pool"):
        for n in accounts:
            for mode in SYBIL_MODES if n > 1 else SYBIL_MODES[:1]:
                def sybil_cell(variant: str = variant, n: int = n, mode: str = mode) -> dict[str, Any]:
                    def route(account: Callable[[str], ModelOracle], _clock: SimClock) -> Any:
                        return SybilOracle(account, accounts=n, per_account=math.ceil(budget / n), mode=mode)
                    t, flags, info = s.collect(variant, route=route if n > 1 else None)
                    return {**s.pirate(t, flags), **info, "accounts": n, "mode": mode}
                sybil[f"{variant}/{n}/{mode}"] = s.cell(f"sybil/{variant}/{n}/{mode}", sybil_cell,
                                                        defense=s.settings(variant), accounts=n, mode=mode)
    out["sybil"] = sybil

    # -- the sybil-resistant mode's budget sweep (one account; the main grid has the others') ---------------
    prefixes = [b for b in (1000, 5000, 10000) if b < budget]

    def pool_budget(prefix: int) -> dict[str, Any]:
        if "pool-1" not in s.transcripts:
            t, flags, _ = s.collect("queen-pool")
            s.transcripts["pool-1"] = (t, flags)
        t, flags = s.transcripts["pool-1"]
        return s.pirate(t.prefix(prefix), flags)
    out["pool_budgets"] = {str(b): s.cell(f"pool-budget/{b}", lambda b=b: pool_budget(b), defense=s.settings("queen-pool"),
                                          prefix=b) for b in prefixes}
    out["pool_budgets"][str(budget)] = sybil["queen-pool/1/contiguous"]

    # -- one attacking account under each policy --------------------------------------------------------------
    attackers: dict[str, Any] = {}

    def attacker(name: str, variant: str, *, pool: str = "attacker", labels: str = "soft",
                 route: Callable[[Callable[[str], ModelOracle], SimClock], Any] | None = None,
                 policy: ClientPolicy | None = None, route_config: dict[str, Any] | None = None) -> None:
        def fn() -> dict[str, Any]:
            t, flags, info = s.collect(variant, pool, route=route, policy=policy)
            if labels == "hard":
                t = Transcript(t.x, onehot(t.answers))
            return {**s.pirate(t, flags), **info}
        attackers[name] = s.cell(f"attacker/{name}", fn, defense=s.settings(variant), pool=pool, labels=labels,
                                 policy=asdict(policy) if policy else None, route=route_config)

    attacker("tier-attacker", "queen", policy=ClientPolicy(allowance=allowance))
    attacker("trusted-attacker", "queen", policy=ClientPolicy(trusted=True))
    attacker("keep-label-soft", "queen-keep-label")
    attacker("keep-label-hard", "queen-keep-label", labels="hard")
    attacker("outside-rs-soft", "queen-outside-rs")
    attacker("outside-rs-surrogate-soft", "queen-outside-rs", pool="surrogate")
    attacker("outside-rs-surrogate-hard", "queen-outside-rs", pool="surrogate", labels="hard")
    for name in ("none", "reverse-sigmoid", "queen", "queen-outside-rs"):
        attacker(f"noise-{name}", name, pool="noise")
    attacker("pacing-accounts-queen", "queen", route=lambda account, _c: SybilOracle(account, accounts=None, per_account=PACE),
             route_config={"new_account_every": PACE})
    attacker("pacing-accounts-queen-pool", "queen-pool",
             route=lambda account, _c: SybilOracle(account, accounts=None, per_account=PACE),
             route_config={"new_account_every": PACE})
    attacker("pacing-windows-queen-window", "queen-window",
             route=lambda account, clock: PacedOracle(account("paced"), per_window=PACE, window_seconds=WINDOW,
                                                      wait=clock.wait),
             route_config={"per_window": PACE, "window_seconds": WINDOW})
    out["attackers"] = attackers

    # -- the attacker that drops answers it believes were reversed --------------------------------------------
    filtered: dict[str, Any] = {}
    for variant in ("queen", "queen-pool"):
        for method in ("shape", "disagreement"):
            def filter_cell(variant: str = variant, method: str = method) -> dict[str, Any]:
                key = f"single-{variant}"
                if key not in s.transcripts:
                    t, flags, _ = s.collect(variant)
                    s.transcripts[key] = (t, flags)
                t, flags = s.transcripts[key]
                result = filter_transcript(t, FilterConfig(method=method))
                kept_flags = flags[result.kept]
                score = s.pirate(result.transcript, kept_flags)
                return {**score, "kept": int(result.kept.sum()), "dropped": int(result.dropped),
                        "reversed_kept": int(kept_flags.sum()), "reversed_total": int(flags.sum())}
            filtered[f"{variant}/{method}"] = s.cell(f"filter/{variant}/{method}", filter_cell,
                                                     defense=s.settings(variant), filter=FilterConfig(method=method))
    out["filtered"] = filtered

    # -- honest clients ----------------------------------------------------------------------------------------
    honest: dict[str, Any] = {}
    policies = {"queen-tier": ("queen", ClientPolicy(allowance=allowance)), "queen-pool": ("queen-pool", None),
                "queen-window": ("queen-window", None), "queen-keep-label": ("queen-keep-label", None),
                "queen-outside-rs": ("queen-outside-rs", None), "queen-outside-rs-tier": ("queen-outside-rs",
                                                                                         ClientPolicy(allowance=allowance))}
    for name, (variant, policy) in policies.items():
        honest[name] = ctx.cell(f"accounts/honest/{name}", lambda v=variant, p=policy: _honest_sizes(s, v, p), upstream=upstream,
                                config={"defense": s.settings(variant), "policy": asdict(policy) if policy else None,
                                        "sizes": HONEST_SIZES, "test": f"{DATASET} test"})
    out["honest"] = honest
    established: dict[str, Any] = {}
    for variant in ("queen-window", "queen-pool"):
        for tiered in (True, False):
            policy = ClientPolicy(allowance=allowance) if tiered else None
            established[f"{variant}/{'tier' if tiered else 'default'}"] = ctx.cell(
                f"accounts/established/{variant}/{tiered}", lambda v=variant, p=policy: _established(s, v, p),
                upstream=upstream, config={"defense": s.settings(variant), "policy": asdict(policy) if policy else None,
                                           "history": "1000 val queries, one window earlier", "test": "first 1000 test"})
    out["established"] = established
    return out


def _honest_sizes(s: _Setup, variant: str, policy: ClientPolicy | None) -> dict[str, Any]:
    """Fresh clients of 100 and of 1,000 queries, and one client of all 10,000, over the test set."""
    result = {}
    for size in HONEST_SIZES:
        protected = ProtectedModel(s.model, s.defense(variant, SimClock()), max_batch=256)
        factory = lambda client, p=protected: ModelOracle(p, client_id=client, policy=policy, batch_size=256)  # noqa: E731
        report = benign_report(factory, s.bundle.test, model=s.model, queries_per_client=None if size >= len(s.bundle.test) else size)
        result[str(size)] = asdict(report)
    return result


def _established(s: _Setup, variant: str, policy: ClientPolicy | None) -> dict[str, Any]:
    """A customer with 1,000 validation queries of history, one window earlier, sends the first 1,000 test images."""
    clock = SimClock()
    protected = ProtectedModel(s.model, s.defense(variant, clock), max_batch=256)
    oracle = ModelOracle(protected, client_id="customer", policy=policy, batch_size=256)
    oracle(s.bundle.val.x[:1000])
    clock.wait(WINDOW)
    test = s.bundle.test[torch.arange(1000)]
    return asdict(benign_report(oracle, test, model=s.model))


# -- summary, criteria and tables ------------------------------------------------------------------------------

COST_TARGET = 0.95  # the attacker's goal: this share of the undefended pirate's accuracy (same attack, same pool)
HOLD_MIN = 20.0  # points below the undefended pirate that a defense must hold the attacker to
HONEST_COST_MAX = 1.0  # points an honest client may lose
BASELINES = ("none", "top1", "rounding", "reverse-sigmoid", "gaussian")


def _acc(cell: dict[str, Any] | None) -> float | None:
    return None if cell is None else float(cell["accuracy"])


def _loss(report: dict[str, Any]) -> float:
    """Points of accuracy an honest client lost against the undefended model on the same queries."""
    return 100 * (report["undefended_accuracy"] - report["accuracy"])


def summarize_accounts(acc: dict[str, Any], grid: dict[str, Any], benign: dict[str, Any]) -> dict[str, Any]:
    """The attacker-cost table, the sybil table and the figures the criteria read."""
    top = acc["budget"]
    undefended = _acc(grid.get(f"knockoff-soft/attacker/none/{top}"))
    assert undefended is not None, "the main grid's undefended pirate is missing"
    target = COST_TARGET * undefended
    budgets = sorted({int(k.rsplit("/", 1)[1]) for k in grid if k.startswith("knockoff-soft/attacker/none/")})

    def sweep(defense: str) -> dict[int, float]:
        if defense == "queen-pool":
            return {int(b): float(c["accuracy"]) for b, c in acc["pool_budgets"].items()}
        return {b: float(grid[f"knockoff-soft/attacker/{defense}/{b}"]["accuracy"]) for b in budgets
                if f"knockoff-soft/attacker/{defense}/{b}" in grid}

    def accounts_needed(defense: str) -> int | None:
        for n in acc["accounts"]:
            cells = [c for k, c in acc["sybil"].items() if k.startswith(f"{defense}/{n}/")]
            if cells and max(c["accuracy"] for c in cells) >= target:
                return n
        return None

    def honest_row(reports: dict[str, Any]) -> dict[str, float]:
        return {str(size): float(r["accuracy"]) for size, r in reports.items()}

    honest_of = {d: honest_row({"100": benign[d]["per_client"], "1000": benign[d]["clients_of_1000"],
                                "10000": benign[d]["single_client"]}) for d in (*BASELINES, "queen")}
    for name, reports in acc["honest"].items():
        honest_of[name] = honest_row(reports)
    none_needed = next((b for b, a in sorted(sweep("none").items()) if a >= target), None)
    rows = []
    for defense in (*BASELINES, "queen", "queen-pool"):
        points = sweep(defense)
        needed = next((b for b, a in sorted(points.items()) if a >= target), None)
        accounts = 1 if needed is not None else (accounts_needed(defense) if defense in ("queen", "queen-pool") else None)
        rows.append({"defense": defense, "accuracy_one_account": points.get(top), "queries_needed": needed,
                     "accounts_needed": accounts,
                     "cost_ratio": (needed / none_needed) if needed and none_needed else None,
                     "cost_ratio_at_least": (top / none_needed) if needed is None and none_needed else None,
                     "honest": honest_of.get(defense)})
    sybil_100 = [c["accuracy"] for k, c in acc["sybil"].items() if k.startswith("queen-pool/100/")]
    tier_honest = acc["honest"]["queen-tier"]["1000"]
    surrogate = {d: _acc(grid.get(f"knockoff-soft/surrogate/{d}/{top}")) for d in (*BASELINES, "queen")}
    surrogate["queen-outside-rs"] = _acc(acc["attackers"]["outside-rs-surrogate-soft"])
    honest_cost = {d: max(_loss(benign[d]["per_client"]), _loss(benign[d]["clients_of_1000"])) for d in BASELINES}
    honest_cost["queen"] = max(_loss(benign["queen"]["per_client"]), _loss(acc["honest"]["queen-tier"]["1000"]))
    honest_cost["queen-outside-rs"] = max(_loss(acc["honest"]["queen-outside-rs"]["100"]),
                                          _loss(acc["honest"]["queen-outside-rs-tier"]["1000"]))
    eligible = [d for d in surrogate if d != "none" and surrogate[d] is not None and honest_cost[d] <= HONEST_COST_MAX]
    return {
        "undefended_accuracy": undefended, "target_accuracy": target, "queries_needed_undefended": none_needed,
        "cost_table": rows,
        "tier_allowance": acc["tier"]["allowance"],
        "tier_honest_1000_loss_points": _loss(tier_honest),
        "queen_single_attacker_held_points": 100 * (undefended - float(grid[f"knockoff-soft/attacker/queen/{top}"]["accuracy"])),
        "pool_100_accounts_worst_accuracy": max(sybil_100) if sybil_100 else None,
        "pool_100_accounts_held_points": 100 * (undefended - max(sybil_100)) if sybil_100 else None,
        "established_pool_tier_loss_points": _loss(acc["established"]["queen-pool/tier"]),
        "surrogate_accuracy": surrogate, "surrogate_honest_cost_points": honest_cost,
        "surrogate_best_within_cost": min(eligible, key=lambda d: surrogate[d]) if eligible else None,  # type: ignore[arg-type,return-value]
    }


def accounts_criteria(summary: dict[str, Any], overhead: dict[str, Any]) -> list[Criterion]:
    """Issue 13's acceptance rows."""
    pool_ratio = overhead["ratio_to_forward"].get("queen_pool_young_client")
    return [
        Criterion(f"tier policy: honest client of 1,000 test queries with the tier (allowance "
                  f"{summary['tier_allowance']} per class, from the validation split), accuracy lost",
                  summary["tier_honest_1000_loss_points"], HONEST_COST_MAX, "<=", unit="points"),
        Criterion("tier policy: one ordinary attacking account, 20k soft KnockoffNets, held below undefended",
                  summary["queen_single_attacker_held_points"], HOLD_MIN, ">=", unit="points"),
        Criterion("sybil-resistant mode: 100-account attacker (worse of contiguous / round-robin) held below undefended",
                  summary["pool_100_accounts_held_points"], HOLD_MIN, ">=", unit="points"),
        Criterion("sybil-resistant mode: established honest customer (tier, history), 1,000 test queries, accuracy lost",
                  summary["established_pool_tier_loss_points"], HONEST_COST_MAX, "<=", unit="points"),
        _surrogate_criterion(summary),
        Criterion("sybil-resistant mode: answer of 256 queries (young client) against the plain forward pass",
                  pool_ratio, 1.5, "<=", unit="x"),
    ]


def _surrogate_criterion(summary: dict[str, Any]) -> Criterion:
    best = summary["surrogate_best_within_cost"]
    detail = ", ".join(f"{d} {100 * a:.1f}% (cost {summary['surrogate_honest_cost_points'][d]:.1f})"
                       for d, a in summary["surrogate_accuracy"].items() if a is not None and d != "none")
    return Criterion("surrogate pool: the strongest defense at an honest cost <= 1 point (clients of 100; customers "
                     "of 1,000 with the tier) is a QUEEN variant", bool(best and best.startswith("queen")), True, "==",
                     detail=f"best: {best or 'none'}; {detail}")


def _k(n: int | None) -> str:
    return "-" if n is None else (f"{n // 1000}k" if n % 1000 == 0 else str(n))


def accounts_markdown(acc: dict[str, Any], summary: dict[str, Any]) -> str:
    """The tables of this grid (attacker cost, sybils, policies, foreign pools, adaptive attackers)."""
    top = acc["budget"]
    lines = [f"### Attacker cost (soft KnockoffNets, in-distribution pool; goal: {100 * COST_TARGET:.0f}% of the undefended "
             f"pirate's {pct(summary['undefended_accuracy'])}%, i.e. {pct(summary['target_accuracy'])}%)", "",
             "Queries: the smallest budget of the sweep at which one account reaches the goal. Accounts: when one account "
             f"never does within {_k(top)}, the fewest accounts sharing the same {_k(top)} queries that do (the sybil table). "
             "Cost: queries needed against the undefended model's.", ""]
    rows = []
    for r in summary["cost_table"]:
        honest = r["honest"] or {}
        cost = (f"{r['cost_ratio']:.1f}x" if r["cost_ratio"] else
                f"> {r['cost_ratio_at_least']:.0f}x" if r["cost_ratio_at_least"] else "-")
        rows.append([r["defense"], pct(r["accuracy_one_account"]), _k(r["queries_needed"]) if r["queries_needed"] else f"> {_k(top)}",
                     "-" if r["accounts_needed"] is None else str(r["accounts_needed"]) if r["queries_needed"] is None
                     else "1", cost, *[pct(honest.get(str(n))) for n in HONEST_SIZES]])
    lines += [markdown_table(["defense", f"pirate, 1 account, {_k(top)}", "queries to goal", "accounts to goal", "cost",
                              "honest acc, clients of 100", "clients of 1k", "one client of 10k"], rows), ""]
    lines += ["### Sybils: the same queries over many client ids, one pirate on the union", "",
              markdown_table(["accounts", *[f"{v} {m}" for v in ("queen", "queen-pool") for m in SYBIL_MODES]],
                             [[str(n), *[pct(_acc(acc["sybil"].get(f"{v}/{n}/{m}" if n > 1 else f"{v}/1/contiguous")))
                                         for v in ("queen", "queen-pool") for m in SYBIL_MODES]] for n in acc["accounts"]]),
              "", "`queen`: per-client state (the paper's, per account). `queen-pool`: the sybil-resistant mode "
              f"({acc['variants']['queen-pool']['young_client_queries']} queries make a client established; young clients share "
              f"one pool of {acc['variants']['queen-pool']['pool_threshold_queries']} novel in-region queries per class; "
              f"{acc['window_seconds']:.0f} s windows).", ""]
    a = acc["attackers"]
    rows = [[name, pct(_acc(c)), pct(c.get("reversed_fraction")), str(c.get("accounts_used", c.get("windows_used", 1)))]
            for name, c in a.items()]
    lines += ["### One attacker under each policy (20k soft queries unless the name says hard)", "",
              markdown_table(["attacker / policy", "pirate accuracy %", "answers reversed %", "accounts or windows"], rows), ""]
    rows = [[k, pct(_acc(c)), str(c["kept"]), str(c["dropped"]), f"{c['reversed_kept']} of {c['reversed_total']}"]
            for k, c in acc["filtered"].items()]
    lines += ["### Adaptive attacker dropping answers it believes were reversed", "",
              markdown_table(["defense / filter", "pirate accuracy %", "kept", "dropped", "reversed answers kept"], rows), ""]
    rows = [[name, *[pct(r[str(n)]["accuracy"]) for n in HONEST_SIZES], f"{r['1000']['l1_distortion']:.3f}"]
            for name, r in acc["honest"].items()]
    lines += [f"### Honest clients under each policy (tier: allowance {acc['tier']['allowance']} novel in-region queries per "
              f"class = {acc['tier']['margin']} x the {acc['tier']['max_class_count']} that 1,000 validation queries make in "
              "their busiest class)", "",
              markdown_table(["policy", "clients of 100", "clients of 1k", "one client of 10k", "mean L1 (clients of 1k)"], rows),
              "", "Established customer (1,000 validation queries of history one window earlier, then the first 1,000 test "
              "images):", "",
              markdown_table(["mode / policy", "accuracy %", "undefended %"],
                             [[k, pct(r["accuracy"]), pct(r["undefended_accuracy"])] for k, r in acc["established"].items()]), ""]
    return "\n".join(lines)
