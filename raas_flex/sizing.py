"""How many pages a layer's pool gets, and whether a prompt leaves room to decode."""

from __future__ import annotations

from raas_flex.policies.base import ConfigView

MIN_DECODE_PAGES = 2


def pages(tokens: int, page_size: int) -> int:
    return -(-tokens // page_size)


def pool_slots(config: ConfigView, prompt_tokens: int, max_new_tokens: int | None,
               keep_all: bool) -> int:
    """Slots for one layer: L/P for an evicting policy, every page for a keep-all one
    (`keep_all` is the layer's policy's: a dense layer keeps all under any policy). Whether
    a prompt fits the budget is checked once, by prefill, where the prompt is written."""
    if not keep_all:
        return config.slots
    if max_new_tokens is None:
        raise ValueError(
            f"policy {config.policy!r} keeps every token, so its pool is sized from the "
            "prompt and max_new_tokens: pass max_new_tokens."
        )
    return pages(prompt_tokens + max_new_tokens, config.page_size)


def check_prompt_fits(config: ConfigView, prompt_tokens: int) -> None:
    """Refuse a prompt that leaves fewer than two pages of decode room in the budget."""
    used = pages(prompt_tokens, config.page_size)
    if config.slots - used < MIN_DECODE_PAGES:
        need = (used + MIN_DECODE_PAGES) * config.page_size
        raise ValueError(
            f"a {prompt_tokens}-token prompt fills {used} of the budget's {config.slots} pages "
            f"(budget={config.budget}, page_size={config.page_size}), leaving fewer than "
            f"{MIN_DECODE_PAGES} pages to decode into; raise budget to at least {need} or "
            "shorten the prompt."
        )
