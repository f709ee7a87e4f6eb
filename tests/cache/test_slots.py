"""Slot choice for a new page: free first, then the lowest key among unpinned slots."""

from __future__ import annotations

import torch

import raas_flex as rf
from raas_flex.cache import FREE, allocate_layer_cache, choose_slot
from tests.layer_harness import Drive, Shapes


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
    cache.length.fill_(32)  # two full pages: the next one is page 2
    slot, room = choose_slot(cache, None)
    assert (int(slot), bool(room)) == (2, True)
    full = _cache([0, 1], [False, False])
    full.length.fill_(32)
    assert not bool(choose_slot(full, None)[1])
    broken = _cache([0, 1, 5, -1], [False, False, False, False])  # slot 2 not free
    broken.length.fill_(32)
    assert not bool(choose_slot(broken, None)[1])  # reported full, never overwritten


def test_keep_all_slot_is_the_lowest_free_slot_through_a_decode():
    """next_keep_all_slot's shortcut (slot = page index) equals the scan for the lowest
    free slot at every page boundary of a quest drive with prompts of unequal length."""
    config = rf.RaaSConfig(budget=64, page_size=16, policy="quest")
    shapes = Shapes(batch=3, kv_heads=2, group=2, head_dim=8)
    drive = Drive(config, rf.make_policy(config), shapes, [37, 16, 1], 70)
    boundaries = 0
    for step in drive.run():
        c = step.cache
        need = (c.length % c.page_size == 0)[:, None].expand(-1, shapes.kv_heads)
        free = c.page_id == FREE
        lowest = torch.where(free, torch.arange(c.num_slots), c.num_slots).amin(-1)
        slot, room = choose_slot(c, None)
        assert torch.equal(room[need], free.any(-1)[need])
        assert torch.equal(slot[need & room], lowest[need & room])
        boundaries += int(need.sum())
    assert boundaries > 0
