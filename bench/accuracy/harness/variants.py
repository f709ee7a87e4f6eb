"""A policy run with changed settings, as one name: `h2o_decay@h2o_decay_gamma=0.999`,
`raas@importance=alpha`, `raas@int8` (a quantized pool, kv_dtype). Results rows carry it as
their policy, so variants of one policy stay separate rows when runs are merged, and the
table runner (`--policies h2o_decay@h2o_decay_gamma=0.999`) reads it back into the apply_raas
keywords that made it.

Why names and not a separate column: every reader of the rows (grid, plots, merges, resume)
already keys on the policy; one string keeps them all right."""

from __future__ import annotations

import json

# how a run decodes (kernel, compile, graphs), not what it keeps: never part of a name
DECODE_OPTIONS = frozenset({"attention_kernel", "compile", "cuda_graph"})


def _value_text(value) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def variant_label(policy: str, policy_config: dict) -> str:
    """The row name of `policy` run with `policy_config` (apply_raas keywords). 'hf', the
    plain-transformers reference, never uses the settings."""
    parts = [_value_text(v) if k == "kv_dtype" else f"{k}={_value_text(v)}"
             for k, v in sorted(policy_config.items())
             if k not in DECODE_OPTIONS and v is not None]
    return policy if not parts or policy == "hf" else f"{policy}@{','.join(parts)}"


def parse_variant(name: str) -> tuple[str, dict]:
    """variant_label's inverse: (policy, apply_raas keywords). A part without '=' is the
    pool's kv_dtype; values are read as JSON where they parse (numbers, true/false)."""
    policy, _, rest = name.partition("@")
    config: dict = {}
    for part in filter(None, rest.split(",")):
        key, eq, text = part.partition("=")
        if not eq:
            key, text = "kv_dtype", part
        try:
            config[key] = json.loads(text)
        except json.JSONDecodeError:
            config[key] = text
    if variant_label(policy, config) != name:
        raise ValueError(f"policy variant {name!r} is not in canonical form; write it as "
                         f"{variant_label(policy, config)!r} (settings sorted by name).")
    return policy, config


def named_rows(run: dict, which: str = "rows") -> list[dict]:
    """Copies of a results file's rows (or its "skipped" entries), each policy named by
    variant_label under the run's policy_config (a merged file's rows, named already, stay
    as they are)."""
    config = run["settings"].get("policy_config", {})
    return [dict(r) if "@" in r["policy"] else {**r, "policy": variant_label(r["policy"], config)}
            for r in run.get(which, [])]
