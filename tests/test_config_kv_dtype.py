"""kv_dtype in RaaSConfig: accepted values, refused combinations, the byte promise."""

from __future__ import annotations

import pytest
import torch

import raas_flex as rf
from raas_flex.policies import policy_class

QUANT = ("int8", "float8_e4m3fn")
EXACT_KEYS = tuple(p for p in rf.available_policies() if policy_class(p).Options.reads_exact_keys)
SUMMARIES = tuple(p for p in rf.available_policies() if p not in EXACT_KEYS)


@pytest.mark.parametrize("kv_dtype", (None, *QUANT))
def test_supported_kv_dtypes_are_accepted(kv_dtype):
    config = rf.RaaSConfig(kv_dtype=kv_dtype)
    assert config.kv_storage_dtype == (None if kv_dtype is None else getattr(torch, kv_dtype))


@pytest.mark.parametrize("bad", ("fp8", "bfloat16", "float8_e5m2", "int4", torch.int8))
def test_unknown_kv_dtype_names_the_choices(bad):
    with pytest.raises(ValueError, match="choose one of"):
        rf.RaaSConfig(kv_dtype=bad)


@pytest.mark.parametrize("kv_dtype", QUANT)
def test_sdpa_kernel_is_refused_naming_flex(kv_dtype):
    with pytest.raises(ValueError, match='attention_kernel="flex"'):
        rf.RaaSConfig(kv_dtype=kv_dtype, attention_kernel="sdpa")


def test_exact_key_policies_are_the_known_ones():
    assert set(EXACT_KEYS) == {"h2o", "h2o_decay", "h2o_horizon", "recycled", "hsr", "raas_hsr", "rkv", "lazy_eviction"}


@pytest.mark.parametrize("policy", EXACT_KEYS)
def test_policies_reading_exact_keys_are_refused(policy):
    with pytest.raises(ValueError, match="use policy=.*'raas'"):
        rf.RaaSConfig(policy=policy, kv_dtype="int8")
    rf.RaaSConfig(policy=policy)  # fine unquantized


def test_exact_score_source_is_refused():
    with pytest.raises(ValueError, match="score_source='bound'"):
        rf.RaaSConfig(score_source="exact", kv_dtype="float8_e4m3fn")


@pytest.mark.parametrize("policy", SUMMARIES)
def test_summary_policies_are_accepted(policy):
    rf.RaaSConfig(policy=policy, kv_dtype="int8")


@pytest.mark.parametrize("kv_dtype", (None, *QUANT))
@pytest.mark.parametrize("dtype", (torch.bfloat16, torch.float32))
def test_pool_bytes_are_what_the_config_promises(kv_dtype, dtype):
    """K/V bytes = tokens · kv_bytes_per_token: 2·D·itemsize unquantized, 2·(D + 4)
    quantized (8-bit codes plus an fp32 scale per token, for K and for V)."""
    config = rf.RaaSConfig(budget=128, page_size=16, kv_dtype=kv_dtype)
    B, H, D = 2, 3, 64
    cache = rf.new_layer_cache(config, rf.make_policy(config), B, H, D, prompt_tokens=20,
                               dtype=dtype)
    kv, _ = cache.nbytes()
    assert kv == B * H * cache.capacity * config.kv_bytes_per_token(D, dtype)
    if kv_dtype is not None:
        bf16 = rf.RaaSConfig(budget=128, page_size=16).kv_bytes_per_token(D, torch.bfloat16)
        assert kv / (B * H * cache.capacity * bf16) == (D + 4) / (2 * D)  # 0.531 at D=64


def test_allocation_refuses_a_float_storage_dtype():
    from raas_flex.cache import allocate_layer_cache

    with pytest.raises(TypeError, match="torch.int8"):
        allocate_layer_cache(1, 1, 16, 4, 16, kv_dtype=torch.bfloat16)


PIP_LINE = 'pip install "torchao>=0.18,<0.19"'


def _hide_torchao(monkeypatch) -> None:
    """Make torchao unimportable for this test, as in a venv built without it (nothing is
    uninstalled: a None entry in sys.modules makes `import torchao` and find_spec fail)."""
    import sys

    for name in [m for m in sys.modules if m == "torchao" or m.startswith("torchao.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "torchao", None)


@pytest.mark.parametrize("kv_dtype", QUANT)
def test_missing_torchao_is_refused_at_construction_with_the_pip_line(monkeypatch, kv_dtype):
    _hide_torchao(monkeypatch)
    with pytest.raises(ImportError) as info:
        rf.RaaSConfig(kv_dtype=kv_dtype)
    assert PIP_LINE in str(info.value)
    assert rf.RaaSConfig().kv_dtype is None  # full precision never needs torchao


def test_unsupported_torchao_version_is_refused_with_the_pip_line(monkeypatch):
    import importlib.metadata

    real = importlib.metadata.version
    monkeypatch.setattr(importlib.metadata, "version",
                        lambda name: "0.17.1" if name == "torchao" else real(name))
    with pytest.raises(ImportError) as info:
        rf.RaaSConfig(kv_dtype="int8")
    assert "0.17.1" in str(info.value) and PIP_LINE in str(info.value)


def test_the_pip_line_is_the_pin_in_pyproject():
    import pathlib
    import tomllib

    from raas_flex.cache.quant import TORCHAO_REQUIREMENT

    pyproject = pathlib.Path(__file__).parents[1] / "pyproject.toml"
    dependencies = tomllib.loads(pyproject.read_text())["project"]["dependencies"]
    assert TORCHAO_REQUIREMENT in dependencies
    assert PIP_LINE == f'pip install "{TORCHAO_REQUIREMENT}"'
