"""The transformers names raas_flex depends on that changed between tested releases.

transformers 5.24 renamed the cache argument of every model and attention `forward`, of
generate()'s model kwargs and of model outputs from `past_key_values` to `cache` (the old
name still works there, with a deprecation warning, until 5.40). raas_flex reads and writes
whichever name the installed release uses, so it neither misses the cache nor triggers the
"both names set" error. Every such name lives here, decided once at import.
"""

from __future__ import annotations

from typing import Any

import transformers
from packaging.version import Version

# The release that renamed the cache argument (see the module docstring).
CACHE_RENAMED_IN = Version("5.24.0")
INSTALLED = Version(transformers.__version__)
CACHE_ARG = "cache" if INSTALLED.release >= CACHE_RENAMED_IN.release else "past_key_values"
_OLD_CACHE_ARG = "past_key_values"


def cache_argument(kwargs: dict[str, Any]) -> Any:
    """The cache passed in `kwargs` under the installed release's name (or the old one)."""
    cache = kwargs.get(CACHE_ARG)
    return kwargs.get(_OLD_CACHE_ARG) if cache is None else cache


def returned_cache(output: Any) -> Any:
    """The cache of a model or generate() output, read without a deprecation warning."""
    return getattr(output, CACHE_ARG)
