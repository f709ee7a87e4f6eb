"""dense: keep and attend every token; the reference every other policy is held against."""

from __future__ import annotations

from dataclasses import dataclass

from raas_flex.policies.base import Policy, PolicyOptions


@dataclass(frozen=True)
class DenseOptions(PolicyOptions):
    """No settings: every page is kept (pool sized for prompt + max new tokens)."""

    keeps_all = True


class DensePolicy(Policy):
    """Keeps every page (pool sized for prompt + max new tokens) and attends all of them."""

    name = "dense"
    Options = DenseOptions
