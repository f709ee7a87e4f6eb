"""Which kernel_options the decode flex call gets: a user setting wins, else the device's
measured default (sm90 only), never something on the CPU."""

import torch

from raas_flex import functional


def test_cpu_gets_torch_defaults_and_user_options_win(monkeypatch):
    functional.note_device("cpu")
    assert functional.decode_kernel_options("cpu") is None
    monkeypatch.setattr(functional, "DECODE_KERNEL_OPTIONS", {"num_stages": 2})
    got = functional.decode_kernel_options("cpu")
    assert got == {"num_stages": 2}
    got["num_stages"] = 5  # a copy: flex may fill in defaults without touching ours
    assert functional.DECODE_KERNEL_OPTIONS == {"num_stages": 2}


def test_hopper_default_only_on_sm90(monkeypatch):
    monkeypatch.setattr(functional, "_DEVICE_DECODE_OPTIONS", {})
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))
    functional.note_device("cuda")
    assert functional.decode_kernel_options("cuda") == functional.HOPPER_DECODE_OPTIONS
    monkeypatch.setattr(functional, "_DEVICE_DECODE_OPTIONS", {})
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (8, 0))
    functional.note_device("cuda")
    assert functional.decode_kernel_options("cuda") is None
