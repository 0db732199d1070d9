"""Side by side: two runs (jobs matched by name), or two values of one axis within a run
(jobs matched by everything else). Pure: gallery documents (:func:`runner.review.runs.gallery`)
in, rows out.

Each row pairs job ``a`` with job ``b`` (either may be missing) and lists what differs
between their specs — model, prompt, each parameter, reference images, matrix values — as
``{"field", "a", "b"}``. Two runs' jobs of one name whose keys differ are flagged
``key_changed``: the prompt, parameters, model or reference images were edited between
the runs, so the older verdict is only a *previous* one.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from runner.errors import ConfigError

Job = Mapping[str, Any]


def _text(value: Any) -> str:
    if value is None:
        return "—"
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True,
                                                           ensure_ascii=False)


def _inputs(job: Job) -> list[str]:
    return [str(i.get("sha256") or i.get("url") or i.get("ref")) for i in job.get("inputs", [])]


def spec_diff(a: Job, b: Job, skip_axes: Sequence[str] = ()) -> list[dict[str, str]]:
    """What differs between two jobs' specs, field by field (parameters one by one)."""
    found: list[dict[str, str]] = []

    def differ(field: str, left: Any, right: Any) -> None:
        if left != right:
            found.append({"field": field, "a": _text(left), "b": _text(right)})

    differ("model", a.get("model"), b.get("model"))
    differ("prompt", a.get("prompt"), b.get("prompt"))
    params_a, params_b = a.get("params", {}), b.get("params", {})
    for name in sorted(set(params_a) | set(params_b)):
        differ(f"params.{name}", params_a.get(name), params_b.get(name))
    differ("images", _inputs(a), _inputs(b))
    axes_a, axes_b = a.get("axes", {}), b.get("axes", {})
    for name in sorted(set(axes_a) | set(axes_b)):
        if name not in skip_axes and name != "model":
            differ(f"axes.{name}", axes_a.get(name), axes_b.get(name))
    differ("repeat index", a.get("index", 0), b.get("index", 0))
    return found


def _row(label: str, a: Job | None, b: Job | None,
         skip_axes: Sequence[str] = ()) -> dict[str, Any]:
    both = a is not None and b is not None
    return {
        "label": label,
        "a": a,
        "b": b,
        "key_changed": bool(both and a["key"] != b["key"]),  # type: ignore[index]
        "diff": spec_diff(a, b, skip_axes) if a is not None and b is not None else [],
    }


def compare_runs(a: Mapping[str, Any], b: Mapping[str, Any]) -> dict[str, Any]:
    """Two runs' jobs matched by name, in run ``a``'s order then ``b``'s new names."""
    jobs_a = {j["name"]: j for j in a["jobs"]}
    jobs_b = {j["name"]: j for j in b["jobs"]}
    names = list(jobs_a) + [n for n in jobs_b if n not in jobs_a]
    rows = [_row(name, jobs_a.get(name), jobs_b.get(name)) for name in names]
    return {"mode": "runs", "a": a["run"], "b": b["run"], "rows": rows,
            "changed": sum(1 for r in rows if r["key_changed"]),
            "only_a": sum(1 for r in rows if r["b"] is None),
            "only_b": sum(1 for r in rows if r["a"] is None)}


def compare_values(doc: Mapping[str, Any], axis: str, value_a: str,
                   value_b: str) -> dict[str, Any]:
    """The jobs of one run with ``axis`` = ``value_a`` beside those with ``value_b``,
    matched by their values on every other axis and their repeat index."""
    if axis not in doc["axes"]:
        raise ConfigError(f"no axis named {axis!r} in this run; axes: {', '.join(doc['axes'])}")
    if value_a == value_b:
        raise ConfigError(f"pick two different values of {axis!r}")

    def rest(job: Job) -> str:
        others = {k: v for k, v in job["axes"].items() if k != axis}
        return json.dumps([others, job.get("index", 0)], sort_keys=True)

    side_a = {rest(j): j for j in doc["jobs"] if j["axes"].get(axis) == value_a}
    side_b = {rest(j): j for j in doc["jobs"] if j["axes"].get(axis) == value_b}
    if not side_a and not side_b:
        raise ConfigError(f"no job has {axis} = {value_a!r} or {value_b!r}")
    order = list(side_a) + [k for k in side_b if k not in side_a]
    rows = []
    for match in order:
        a, b = side_a.get(match), side_b.get(match)
        sample = a or b
        assert sample is not None
        label = " · ".join(f"{k}={v}" for k, v in sorted(sample["axes"].items()) if k != axis)
        row = _row(label or sample["name"], a, b, skip_axes=(axis,))
        row["key_changed"] = False  # different values make different jobs by design
        rows.append(row)
    return {"mode": "values", "run": doc["run"], "axis": axis, "a": value_a, "b": value_b,
            "rows": rows}
