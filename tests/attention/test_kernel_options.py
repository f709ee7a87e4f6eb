"""Which kernel_options the decode flex call gets: RaaSConfig.kernel_options wins, else the
device's measured default (sm90 only), never something on the CPU; chosen once, at pool
allocation, and carried by the pool (no module state)."""

import torch

import raas_flex as rf
from raas_flex.attention import HOPPER_DECODE_OPTIONS, device_kernel_options


def test_cpu_gets_torch_defaults_and_config_options_win():
    assert device_kernel_options("cpu") is None
    chosen = {"num_stages": 2}
    config = rf.RaaSConfig(budget=64, kernel_options=chosen)
    cache = rf.new_layer_cache(config, rf.make_policy(config), 1, 2, 16, prompt_tokens=8)
    assert cache.kernel_options == {"num_stages": 2}
    cache.kernel_options["num_stages"] = 5  # a copy: the config's dict stays as it was
    assert chosen == {"num_stages": 2}
    hash(config)  # kernel_options stays out of the hash


def test_hopper_default_only_on_sm90(monkeypatch):
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))
    assert device_kernel_options("cuda") == HOPPER_DECODE_OPTIONS
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (8, 0))
    assert device_kernel_options("cuda") is None


def test_block_pages_default_and_config():
    """Wide kv blocks (128 tokens) on sm90 only; the config's choice wins; the pool's block
    list covers every slot in blocks of that many pages."""
    from raas_flex.attention import device_block_pages
    assert device_block_pages("cpu", 16) == 1
    config = rf.RaaSConfig(budget=64, kernel_block_pages=2)
    cache = rf.new_layer_cache(config, rf.make_policy(config), 1, 2, 16, prompt_tokens=8)
    count, index, pages = cache.every_slot
    assert pages == 2 and count.tolist() == [[[2], [2]]]  # 4 slots, 2 pages a block
    assert index.tolist() == [[[[0, 1]], [[0, 1]]]]
    try:
        rf.RaaSConfig(kernel_block_pages=3)
    except ValueError as exc:
        assert "kernel_block_pages=3" in str(exc) and "(1, 2, 4, 8)" in str(exc)
    else:
        raise AssertionError("kernel_block_pages=3 was accepted")


def test_hopper_block_pages(monkeypatch):
    from raas_flex.attention import device_block_pages
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))
    assert [device_block_pages("cuda", p) for p in (16, 32, 64, 128)] == [8, 4, 2, 1]
    assert device_block_pages("cuda", 16, chosen=1) == 1
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (8, 0))
    assert device_block_pages("cuda", 16) == 1
