"""The hashed matrix expansion gives exactly the combinations of the plain definition.

``reference`` below is the matrix rules written the obvious way (every include/exclude
entry compared with every combination); ``expand_matrix`` must agree with it on any matrix,
and stay fast when a big matrix has many entries.
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Mapping
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runner.manifest.matrix import MAX_WORK, MatrixError, expand_matrix
from runner.manifest.matrix import same_value as _same


def _matches(combo: Mapping[str, Any], entry: Mapping[str, Any]) -> bool:
    return all(k in combo and _same(combo[k], v) for k, v in entry.items())


def reference(matrix: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The matrix rules, quadratic and obviously right (see runner/manifest/matrix.py)."""
    if not matrix:
        return [{}]
    axes = [(k, v) for k, v in matrix.items() if k not in ("include", "exclude")]
    include = list(matrix.get("include") or [])
    exclude = list(matrix.get("exclude") or [])
    original = {k for k, _ in axes}
    if axes:
        keys = [k for k, _ in axes]
        combos = [dict(zip(keys, values, strict=True))
                  for values in itertools.product(*(v for _, v in axes))]
        combos = [c for c in combos if not any(_matches(c, e) for e in exclude)]
    else:
        combos = [] if include else [{}]
    base = combos[:]
    for entry in include:
        fixed = {k: v for k, v in entry.items() if k in original}
        matched = False
        for combo in base:
            if _matches(combo, fixed):
                matched = True
                combo.update((k, v) for k, v in entry.items() if k not in original)
        if not matched:
            combos.append(dict(entry))
    return combos


# values that are equal, nearly equal or equal only by loose rules: 1, 1.0, True, "1", …
VALUE = st.sampled_from([0, 1, 1.0, 2, True, False, "1", "a", "b", None, [1], [1.0], {"k": 1},
                         {"k": True}])
AXES = ["a", "b", "c"]


@st.composite
def matrices(draw: st.DrawFn) -> dict[str, Any]:
    names = draw(st.lists(st.sampled_from(AXES), unique=True, max_size=3))
    m: dict[str, Any] = {n: draw(st.lists(VALUE, min_size=1, max_size=3)) for n in names}
    if names and draw(st.booleans()):
        m["exclude"] = draw(st.lists(st.dictionaries(st.sampled_from(names), VALUE,
                                                     min_size=1, max_size=2), max_size=3))
    if draw(st.booleans()):
        m["include"] = draw(st.lists(st.dictionaries(st.sampled_from([*AXES, "x", "y"]), VALUE,
                                                     min_size=1, max_size=3), max_size=3))
    return m


@settings(max_examples=300, deadline=None)
@given(matrices())
def test_hashed_expansion_equals_the_plain_rules(matrix: dict[str, Any]) -> None:
    got = expand_matrix(json.loads(json.dumps(matrix)))
    want = reference(json.loads(json.dumps(matrix)))
    # compare with the same loose-but-typed equality the rules use
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        assert list(g) == list(w)
        assert all(_same(g[k], w[k]) and type(g[k]) is type(w[k]) for k in g)


def test_many_entries_on_a_big_matrix_stay_fast() -> None:
    m: dict[str, Any] = {f"a{i}": list(range(10)) for i in range(5)}  # 100,000 combinations
    m["exclude"] = [{"a0": i % 10, "a1": i % 7, "a2": i} for i in range(300)]
    m["include"] = [{"a3": i % 10, "extra": i} for i in range(300)]
    started = time.perf_counter()
    combos = expand_matrix(m)
    assert time.perf_counter() - started < 5  # the pairwise rules took ~30 s here
    # only i = 0..9 name an existing a2 value; each removes the 100 (a3, a4) combinations
    assert len(combos) == 100_000 - 10 * 100
    assert not any((c["a0"], c["a1"], c["a2"]) == (i % 10, i % 7, i)
                   for c in combos for i in range(10))
    # every entry with the combination's a3 applies, in order: the last one wins
    assert all(c["extra"] == 290 + c["a3"] for c in combos)


def test_work_beyond_the_limit_is_refused_before_expanding() -> None:
    m: dict[str, Any] = {f"a{i}": list(range(10)) for i in range(6)}  # 1,000,000
    keys = [f"a{i}" for i in range(6)]
    m["exclude"] = [{k: 99 for k in subset} for n in range(1, 6)
                    for subset in itertools.combinations(keys, n)]  # 62 key sets
    started = time.perf_counter()
    with pytest.raises(MatrixError, match=r"62 different key sets.*the limit is"):
        expand_matrix(m)
    assert time.perf_counter() - started < 1
    assert MAX_WORK < 1_000_000 * 62
