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
import math
import operator
from collections.abc import Mapping
from typing import Any


class MatrixError(ValueError):
    """A matrix that cannot be expanded (an exclude key that is not an axis, too much work)."""


MAX_WORK = 20_000_000  # combinations × distinct include/exclude key sets


def same_value(a: Any, b: Any) -> bool:
    """Equality as YAML means it: ``true`` is not ``1``, mappings compare by content."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, dict | list) or isinstance(b, dict | list):
        return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)
    return bool(a == b)


def _canon(value: Any) -> tuple[str, Any]:
    """A hashable stand-in for ``value``: equal stand-ins exactly when :func:`same_value`."""
    if isinstance(value, bool):
        return ("b", value)
    if isinstance(value, int | float):
        return ("n", value)  # 1 == 1.0, as same_value says
    if isinstance(value, dict | list):
        return ("j", json.dumps(value, sort_keys=True))
    if isinstance(value, str):
        return ("s", value)
    return ("o", repr(value)) if value is not None else ("z", None)


def _index(entries: list[dict[str, Any]],
           keys_of: Any) -> dict[tuple[str, ...], dict[tuple[Any, ...], list[int]]]:
    """Entries grouped by the keys they match on: keys → canonical values → entry numbers."""
    groups: dict[tuple[str, ...], dict[tuple[Any, ...], list[int]]] = {}
    for i, entry in enumerate(entries):
        keys = tuple(sorted(keys_of(entry)))
        values = tuple(_canon(entry[k]) for k in keys)
        groups.setdefault(keys, {}).setdefault(values, []).append(i)
    return groups


def _getter(group: tuple[str, ...], position: Mapping[str, int]) -> Any:
    """A combination's canonical values → the tuple its entry group is keyed by."""
    if not group:
        return lambda canon: ()
    if len(group) == 1:
        i = position[group[0]]
        return lambda canon: (canon[i],)
    return operator.itemgetter(*(position[k] for k in group))


def expand_matrix(matrix: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    """Every combination of ``matrix``, in order (see the module docstring).

    Entries are matched by hashing, so the work is the number of combinations times the
    number of distinct key sets used by ``include``/``exclude`` entries; a matrix that would
    need more than :data:`MAX_WORK` such steps raises :class:`MatrixError`."""
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
    excluded = _index(exclude, lambda e: e)
    included = _index(include, lambda e: [k for k in e if k in original])
    size = math.prod(len(v) for _, v in axes) if axes else 0
    work = size * (len(excluded) + len(included))
    if work > MAX_WORK:
        raise MatrixError(f"expanding this matrix would take {work:,} steps ({size:,} "
                          f"combinations × {len(excluded) + len(included)} different key sets "
                          f"in include/exclude); the limit is {MAX_WORK:,}: use fewer "
                          f"combinations or entries that name the same axes")
    keys = [k for k, _ in axes]
    position = {k: i for i, k in enumerate(keys)}
    base: list[dict[str, Any]] = []
    canons: list[tuple[Any, ...]] = []  # each base combination's canonical values
    if axes:
        values = itertools.product(*(v for _, v in axes))
        if not excluded and not included:
            base = [dict(zip(keys, picked, strict=True)) for picked in values]
        else:
            ex = [(_getter(group, position), table) for group, table in excluded.items()]
            canonical = itertools.product(*([_canon(x) for x in v] for _, v in axes))
            for picked, canon in zip(values, canonical, strict=True):
                if ex and any(get(canon) in table for get, table in ex):
                    continue
                base.append(dict(zip(keys, picked, strict=True)))
                if included:
                    canons.append(canon)
    elif not include:
        return [{}]
    matched = [False] * len(include)
    if included:
        inc = [(_getter(group, position), table) for group, table in included.items()]
        extras = [[(k, v) for k, v in e.items() if k not in original] for e in include]
        for combo, canon in zip(base, canons, strict=True):
            hits: list[int] = []
            for get, table in inc:
                hits.extend(table.get(get(canon), ()))
            for i in sorted(hits):  # entry by entry: a later entry overwrites an earlier one
                matched[i] = True
                combo.update(extras[i])
    combos = base + [dict(entry) for i, entry in enumerate(include) if not matched[i]]
    return combos
