"""Decisions: one small module per policy, selected by name.

Adding a policy: its module (a Policy subclass and its PolicyOptions dataclass) and one line
in _REGISTRY; every list of policies (config checks, CLI choices, tests, bench) is read
from here.
"""

from __future__ import annotations

from raas_flex.policies.base import Policy, PolicyOptions
from raas_flex.policies.dense import DensePolicy
from raas_flex.policies.h2o import H2OPolicy
from raas_flex.policies.h2o_decay import H2ODecayPolicy
from raas_flex.policies.h2o_horizon import H2OHorizonPolicy
from raas_flex.policies.hsr import HSRPolicy
from raas_flex.policies.lazy_eviction import LazyEvictionPolicy
from raas_flex.policies.lessismore import LessIsMorePolicy
from raas_flex.policies.quest import QuestPolicy
from raas_flex.policies.raas import RaaSPolicy
from raas_flex.policies.raas_guard import RaaSGuardPolicy
from raas_flex.policies.raas_hsr import RaaSHSRPolicy
from raas_flex.policies.random_page import RandomPolicy
from raas_flex.policies.rkv import RKVPolicy
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
    RaaSGuardPolicy.name: RaaSGuardPolicy,  # ours: raas with a recency guard (issue 17)
    H2ODecayPolicy.name: H2ODecayPolicy,  # ours: h2o with a decaying accumulator (issue 17)
    H2OHorizonPolicy.name: H2OHorizonPolicy,  # ours: decay over a budget-scaled horizon (17)
    # reasoning-specific peers (issue 20)
    RKVPolicy.name: RKVPolicy,
    LazyEvictionPolicy.name: LazyEvictionPolicy,
    LessIsMorePolicy.name: LessIsMorePolicy,
}


def available_policies() -> tuple[str, ...]:
    return tuple(_REGISTRY)


def policy_class(name: str) -> type[Policy]:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown policy {name!r}; choose one of {sorted(_REGISTRY)}.") from None


def option_owners() -> dict[str, tuple[str, ...]]:
    """{flat option name: the policies that take it}, e.g. "hsr_epsilon": ("hsr", "raas_hsr")."""
    owners: dict[str, tuple[str, ...]] = {}
    for name, cls in _REGISTRY.items():
        for flat in cls.Options.flat_names():
            owners[flat] = owners.get(flat, ()) + (name,)
    return owners


def make_policy(config) -> Policy:
    """The policy object the config names."""
    return policy_class(config.policy)(config)


__all__ = ["Policy", "PolicyOptions", "available_policies", "make_policy", "option_owners",
           "policy_class"]
