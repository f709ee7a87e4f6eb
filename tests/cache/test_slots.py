"""Slot choice for a new page: free first, then the lowest key among unpinned slots."""

from __future__ import annotations

import torch

from raas_flex.cache import allocate_layer_cache, choose_slot


def _cache(page_ids, pinned):
    cache = allocate_layer_cache(1, 1, 4, len(page_ids), 16)
    cache.page_id.copy_(torch.tensor(page_ids).view(1, 1, -1))
    cache.pinned.copy_(torch.tensor(pinned).view(1, 1, -1))
    return cache


def test_free_slot_wins_over_any_victim():
    cache = _cache([0, -1, 2, -1], [True, False, False, False])
    slot, room = choose_slot(cache, torch.zeros(1, 1, 4))
    assert (int(slot), bool(room)) == (1, True)


def test_lowest_key_wins_and_ties_go_to_the_oldest_page():
    cache = _cache([0, 5, 3, 4], [True, False, False, False])
    slot, _ = choose_slot(cache, torch.tensor([[[0.0, 2.0, 2.0, 7.0]]]))
    assert int(slot) == 2  # pages 5 and 3 tie at 2.0; page 3 is older; pinned page 0 skipped


def test_infinite_keys_never_let_a_pinned_slot_win_the_tie():
    cache = _cache([0, 5, 3, 4], [True, False, False, False])
    slot, room = choose_slot(cache, torch.full((1, 1, 4), float("inf")))
    assert (int(slot), bool(room)) == (2, True)


def test_all_pinned_reports_no_room():
    cache = _cache([0, 1], [True, True])
    _, room = choose_slot(cache, torch.zeros(1, 1, 2))
    assert not bool(room)


def test_keep_all_policy_only_takes_free_slots():
    cache = _cache([0, 1, -1], [False, False, False])
    slot, room = choose_slot(cache, None)
    assert (int(slot), bool(room)) == (2, True)
    full = _cache([0, 1], [False, False])
    assert not bool(choose_slot(full, None)[1])
