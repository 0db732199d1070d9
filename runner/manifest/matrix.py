"""Matrix expansion with GitHub Actions semantics.

1. The cartesian product of the axes (every key but ``include``/``exclude``), in the order
   the axes are declared, the last axis varying fastest.
2. ``exclude``: an entry removes every combination that matches all of the entry's keys
   (a partial match is enough). Its keys must be axes.
3. ``include``, entry by entry: for every combination (from step 2) whose values equal the
   entry's values for all of the entry's keys that are *original axes*, the entry's other
   keys are added to the combination. An entry never overwrites an original axis value but
   does overwrite a value added by an earlier entry. An entry that matches no combination
   is appended as a new combination of its own.

A matrix with no axes is its ``include`` entries (one combination each), or, with no
``include`` either, a single empty combination.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Mapping
from typing import Any


class MatrixError(ValueError):
    """A matrix that cannot be expanded (an exclude key that is not an axis)."""


def same_value(a: Any, b: Any) -> bool:
    """Equality as YAML means it: ``true`` is not ``1``, mappings compare by content."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, dict | list) or isinstance(b, dict | list):
        return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)
    return bool(a == b)


def _matches(combo: Mapping[str, Any], entry: Mapping[str, Any]) -> bool:
    return all(k in combo and same_value(combo[k], v) for k, v in entry.items())


def expand_matrix(matrix: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    """Every combination of ``matrix``, in order (see the module docstring)."""
    if not matrix:
        return [{}]
    axes = [(k, v) for k, v in matrix.items() if k not in ("include", "exclude")]
    include = list(matrix.get("include") or [])
    exclude = list(matrix.get("exclude") or [])
    original = {k for k, _ in axes}
    for entry in exclude:
        unknown = [k for k in entry if k not in original]
        if unknown:
            raise MatrixError(f"exclude key {unknown[0]!r} is not a matrix axis")
    if axes:
        keys = [k for k, _ in axes]
        combos = [dict(zip(keys, values, strict=True))
                  for values in itertools.product(*(v for _, v in axes))]
        combos = [c for c in combos if not any(_matches(c, e) for e in exclude)]
    else:
        combos = [] if include else [{}]
    base = combos[:]  # includes match the product's combinations only, not appended ones
    for entry in include:
        fixed = {k: v for k, v in entry.items() if k in original}
        extra = [(k, v) for k, v in entry.items() if k not in original]
        matched = False
        for combo in base:
            if _matches(combo, fixed):
                matched = True
                for k, v in extra:
                    combo[k] = v
        if not matched:
            combos.append(dict(entry))
    return combos
