"""What the server lets one client have: :class:`ClientPolicy` (output mode, budget, QUEEN tier).

The policy travels with every batch: :class:`~modelshield.defense.ProtectedModel` enforces the output mode
and the budget itself and hands the policy to the defense, so a stateful defense (QUEEN) can treat a trusted
or higher-tier client differently. Stateless defenses ignore it.

Example:
    >>> ClientPolicy(allowance=200).allowance, ClientPolicy().trusted
    (200, False)
    >>> ClientPolicy(allowance=-1)
    Traceback (most recent call last):
    ...
    modelshield.errors.ConfigError: ClientPolicy.allowance must be an integer >= 0 or None, got -1
"""

from __future__ import annotations

from dataclasses import dataclass

from modelshield.errors import ConfigError

__all__ = ["OUTPUT_MODES", "ClientPolicy"]

OUTPUT_MODES = ("probabilities", "label")


def _count_or_none(value: object) -> bool:
    return value is None or (isinstance(value, int) and not isinstance(value, bool) and value >= 0)


@dataclass(frozen=True)
class ClientPolicy:
    """What the server lets one client have.

    Attributes:
        output: ``"probabilities"`` (the defended vectors) or ``"label"`` (a one-hot row on their top-1 class,
            for clients that may only see labels).
        budget: most queries ever answered to the client (counted in the state store), None for unlimited.
        trusted: exempt from stateful defenses: QUEEN neither records nor reverses this client's queries (it
            still gets QUEEN's stateless answer, label-preserving). For clients the deployer vouches for.
        allowance: the client's tier for QUEEN: novel in-region queries per class before its answers are
            reversed, replacing :attr:`~modelshield.defense.QueenConfig.threshold_queries` (and the coverage
            threshold) for this client, and keeps it out of the sybil-resistant mode's pool of young clients (a
            tier is for a customer the deployer knows); None uses the config's threshold.

    Raises:
        ConfigError: unknown output mode, negative budget or allowance.
    """

    output: str = "probabilities"
    budget: int | None = None
    trusted: bool = False
    allowance: int | None = None

    def __post_init__(self) -> None:
        if self.output not in OUTPUT_MODES:
            raise ConfigError(f"ClientPolicy.output must be one of {', '.join(OUTPUT_MODES)}, got {self.output!r}")
        if not _count_or_none(self.budget):
            raise ConfigError(f"ClientPolicy.budget must be an integer >= 0 or None, got {self.budget!r}")
        if not isinstance(self.trusted, bool):
            raise ConfigError(f"ClientPolicy.trusted must be True or False, got {self.trusted!r}")
        if not _count_or_none(self.allowance):
            raise ConfigError(f"ClientPolicy.allowance must be an integer >= 0 or None, got {self.allowance!r}")
