"""Job keys: what the provider will be asked, hashed; stable across runs and machines."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from runner.jobs import ImageRef, canonical_json, job_key
from runner.manifest import load_plan

SWEEP = """\
version: 1
matrix:
  product: [tent, boots]
  light: [dusk, dawn]
models:
  v4: {model: wiro/seedream-v4, params: {size: 1024x1024}}
  pix: {model: pixwith/seedream-4.5}
jobs:
  - name: "{{ product }}-{{ light }}-{{ model.alias }}-{{ index }}"
    model: [v4, pix]
    prompt: "a {{ product }} at {{ light }}"
    repeat: 2
"""


def test_same_spec_twice_gives_the_same_keys(plan_of) -> None:
    first = plan_of(SWEEP, "a.yaml")
    second = plan_of(SWEEP, "b.yaml")
    assert [j.key for j in first.jobs] == [j.key for j in second.jobs]
    assert len({j.key for j in first.jobs}) == len(first.jobs) == 16


def test_key_is_the_sha256_of_the_canonical_request(plan_of) -> None:
    job = plan_of(SWEEP).jobs[1]
    assert (job.name, job.index) == ("tent-dusk-v4-1", 1)
    doc = {"model": "wiro/seedream-v4", "prompt": "a tent at dusk",
           "params": {"size": "1024x1024", "maxImages": 1, "watermark": False},
           "images": [], "index": 1}
    canonical = json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert job.key == hashlib.sha256(canonical.encode()).hexdigest()


def test_name_and_axes_are_not_part_of_the_key(plan_of) -> None:
    a = plan_of(SWEEP).jobs[0]
    b = plan_of(SWEEP.replace('name: "{{ product }}', 'name: "x-{{ product }}')).jobs[0]
    assert a.name != b.name
    assert a.key == b.key


def test_adding_a_matrix_value_leaves_every_other_key_unchanged(plan_of) -> None:
    before = {j.name: j.key for j in plan_of(SWEEP).jobs}
    after = {j.name: j.key for j in plan_of(
        SWEEP.replace("product: [tent, boots]", "product: [tent, lamp, boots]")
             .replace("light: [dusk, dawn]", "light: [dusk, noon, dawn]")).jobs}
    assert len(after) == 3 * 3 * 2 * 2
    assert {n: after[n] for n in before} == before
    assert len(set(after.values()) - set(before.values())) == len(after) - len(before)


def test_changing_what_is_asked_changes_the_key(plan_of) -> None:
    base = plan_of(SWEEP).jobs[0].key
    assert plan_of(SWEEP.replace("a {{ product }}", "an {{ product }}")).jobs[0].key != base
    assert plan_of(SWEEP.replace("size: 1024x1024", "size: 2048x2048")).jobs[0].key != base


def test_default_params_are_explicit_in_the_key(plan_of) -> None:
    # writing a default explicitly asks the provider the same thing: same key
    implicit = plan_of(SWEEP).jobs[0]
    explicit = plan_of(SWEEP.replace("{size: 1024x1024}",
                                     "{size: 1024x1024, maxImages: 1, watermark: false}"))
    assert explicit.jobs[0].key == implicit.key


EDIT = """\
version: 1
image_sets:
  refs: [refs/*.png]
jobs:
  - name: edit
    model: wiro/seedream-v4
    images: [refs, "https://example.com/style.png"]
    prompt: combine them
"""


def _tree(root: Path, image) -> Path:
    from PIL import Image

    (root / "refs").mkdir(parents=True)
    Image.new("RGB", (8, 8), (10, 200, 30)).save(root / "refs" / "a.png")
    Image.new("RGB", (8, 8), (200, 10, 30)).save(root / "refs" / "b.png")
    (root / "m.yaml").write_text(EDIT)
    return root / "m.yaml"


def test_local_images_are_keyed_by_content_not_path(tmp_path: Path, image) -> None:
    one = load_plan(_tree(tmp_path / "machine-one" / "deep" / "folder", image))
    two_dir = tmp_path / "elsewhere"
    shutil.copytree(tmp_path / "machine-one" / "deep" / "folder", two_dir)
    two = load_plan(two_dir / "m.yaml")
    j1, j2 = one.jobs[0], two.jobs[0]
    assert j1.images[0].path != j2.images[0].path
    assert j1.key == j2.key
    assert [i.key_part() for i in j1.images] == [
        {"sha256": hashlib.sha256((two_dir / "refs" / "a.png").read_bytes()).hexdigest()},
        {"sha256": hashlib.sha256((two_dir / "refs" / "b.png").read_bytes()).hexdigest()},
        {"url": "https://example.com/style.png"}]
    # new content under the same name: a new key
    from PIL import Image

    Image.new("RGB", (8, 8), (0, 0, 0)).save(two_dir / "refs" / "a.png")
    assert load_plan(two_dir / "m.yaml").jobs[0].key != j1.key


def test_each_image_file_is_hashed_once_per_expansion(plan_of, image, monkeypatch) -> None:
    from runner.manifest import images as images_module

    image("refs/a.png")
    calls: list[str] = []
    real = images_module.ImageResolver.file

    def counting(self, rel, path):  # type: ignore[no-untyped-def]
        if str(path) not in self._files:
            calls.append(rel)
        return real(self, rel, path)

    monkeypatch.setattr(images_module.ImageResolver, "file", counting)
    plan = plan_of("version: 1\nmatrix: {n: [1, 2, 3]}\nimage_sets: {s: [refs/a.png]}\n"
                   "jobs:\n  - name: \"j{{ n }}\"\n    model: wiro/seedream-v4\n"
                   "    images: [s, refs/a.png, \"refs/{{ 'a' }}.png\"]\n    prompt: x{{ n }}\n")
    assert len(plan.jobs) == 3
    assert all(len(j.images) == 3 for j in plan.jobs)
    assert calls == ["refs/a.png"]


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=8)


@settings(max_examples=200, deadline=None)
@given(model=st.text(), prompt=st.text(), params=st.dictionaries(st.text(), _json_values),
       index=st.integers(min_value=0, max_value=10**6),
       images=st.lists(st.one_of(
           st.builds(ImageRef, ref=st.text(), url=st.text()),
           st.builds(ImageRef, ref=st.text(), path=st.just("/x.png"), sha256=st.text())),
           max_size=3))
def test_job_key_is_the_sha256_of_canonical_json_for_any_request(
        model: str, prompt: str, params: dict[str, Any], index: int,
        images: list[ImageRef]) -> None:
    """The key is put together from canonical parts: it must equal hashing the whole
    document's canonical JSON, with or without the parameters' canonical form given."""
    doc = {"model": model, "prompt": prompt, "params": params,
           "images": [img.key_part() for img in images], "index": index}
    expected = hashlib.sha256(canonical_json(doc).encode("utf-8")).hexdigest()
    assert job_key(model, prompt, params, tuple(images), index) == expected
    assert job_key(model, prompt, params, tuple(images), index,
                   canonical_params=canonical_json(params)) == expected
