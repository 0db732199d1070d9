"""Whatever a manifest holds, checking it gives located problems, never a crash."""

from __future__ import annotations

import tempfile
from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runner.errors import ManifestError
from runner.manifest import check

KEYS = ["version", "name", "vars", "matrix", "image_sets", "models", "prompts", "jobs",
        "output", "limits", "budget", "providers", "model", "params", "price", "prompt",
        "images", "repeat", "include", "exclude", "filename", "wiro", "pixwith", "base_url",
        "usd_per_image", "concurrency", "x", "width", "seed", "size", "maxImages"]
TEXT = st.sampled_from(["", "x", "tent", "{{ x }}", "{{ index + 1 }}", "{{ model.alias }}",
                        "{% if %}", "{{ prompts.a }}", "refs/*.png", "https://e.x/a.png",
                        "wiro/seedream-v4", "wiro/seedream-v3", "pixwith/seedream-4.5",
                        "../up", "C:\\x", "v4", "2048x2048", "{{ ''.__class__ }}", "a/b"])
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-3, 20), st.floats(-1, 5), TEXT)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=3),
                            st.dictionaries(st.sampled_from(KEYS), inner, max_size=4)),
    max_leaves=25)
BASE = {"version": 1, "jobs": [{"model": "wiro/seedream-v4", "prompt": "x"}]}


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.sampled_from(KEYS), VALUES, max_size=6), st.booleans())
def test_random_manifests_never_crash(extra: dict, merge: bool) -> None:
    doc = {**BASE, **extra} if merge else extra
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "m.yaml"
        path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
        plan, errors = check(path)
    assert (plan is None) == bool(errors)
    for err in errors:
        assert isinstance(err, ManifestError)
        assert err.line >= 1
        assert err.col >= 1
        assert err.path.startswith("$")


@settings(max_examples=400, deadline=None)
@given(st.text(alphabet="a./\\:C\x01é ", max_size=12))
def test_output_name_fast_path_agrees_with_the_full_check(name: str) -> None:
    from runner.manifest.plan import _output_reason, unsafe_output_reason

    assert (unsafe_output_reason(name) is None) == (_output_reason(name) is None)
