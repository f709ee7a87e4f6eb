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
