"""Decisions: one small module per policy, selected by name."""

from __future__ import annotations

from raas_flex.policies.base import Policy
from raas_flex.policies.dense import DensePolicy
from raas_flex.policies.raas import RaaSPolicy

_REGISTRY: dict[str, type[Policy]] = {
    DensePolicy.name: DensePolicy,
    RaaSPolicy.name: RaaSPolicy,
}


def available_policies() -> tuple[str, ...]:
    return tuple(_REGISTRY)


def policy_class(name: str) -> type[Policy]:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown policy {name!r}; choose one of {sorted(_REGISTRY)}.") from None


def make_policy(config) -> Policy:
    """The policy object the config names."""
    return policy_class(config.policy)(config)


__all__ = ["Policy", "available_policies", "make_policy", "policy_class"]
