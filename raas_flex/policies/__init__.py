"""Decisions: one small module per policy, selected by name."""

from __future__ import annotations

from raas_flex.policies.base import Policy
from raas_flex.policies.dense import DensePolicy
from raas_flex.policies.h2o import H2OPolicy
from raas_flex.policies.hsr import HSRPolicy
from raas_flex.policies.quest import QuestPolicy
from raas_flex.policies.raas import RaaSPolicy
from raas_flex.policies.raas_hsr import RaaSHSRPolicy
from raas_flex.policies.random_page import RandomPolicy
from raas_flex.policies.recycled import RecycledPolicy
from raas_flex.policies.streaming import StreamingPolicy

_REGISTRY: dict[str, type[Policy]] = {
    DensePolicy.name: DensePolicy,
    RaaSPolicy.name: RaaSPolicy,
    # peers (issue 5)
    QuestPolicy.name: QuestPolicy,
    H2OPolicy.name: H2OPolicy,
    StreamingPolicy.name: StreamingPolicy,
    RecycledPolicy.name: RecycledPolicy,
    RandomPolicy.name: RandomPolicy,
    HSRPolicy.name: HSRPolicy,
    RaaSHSRPolicy.name: RaaSHSRPolicy,
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
