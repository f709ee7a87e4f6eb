"""dense: keep and attend every token; the reference every other policy is held against."""

from __future__ import annotations

from raas_flex.policies.base import Policy


class DensePolicy(Policy):
    """Keeps every page (pool sized for prompt + max new tokens) and attends all of them."""

    name = "dense"
    keeps_all = True
