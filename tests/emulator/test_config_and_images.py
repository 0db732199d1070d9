"""Fault specs, emulator settings and the rendered outputs."""

from __future__ import annotations

import hashlib
import io
import random
import struct
import textwrap
from concurrent.futures import ThreadPoolExecutor

import pytest
from PIL import Image, ImageDraw, ImageFont, ImageStat

from runner.config import demo_credentials
from runner.emulator import EmulatorConfig, FaultSpec, images
from runner.emulator.faults import FaultInjector
from runner.emulator.images import make_output, output_size, pad_png, render_png


def test_fault_spec_parses_every_kind() -> None:
    spec = FaultSpec.parse("429=0.1,5xx=0.05,drop=0.02,slow=0.05,fail=0.1,truncate=0.05,"
                           "task_error=0.03,slow_seconds=3")
    assert (spec.http_429, spec.http_5xx, spec.drop, spec.slow, spec.fail, spec.truncate,
            spec.task_error) == (0.1, 0.05, 0.02, 0.05, 0.1, 0.05, 0.03)
    assert spec.slow_seconds == 3
    assert spec.rate("5xx") == 0.05
    assert spec.rate("task_error") == 0.03
    assert FaultSpec.parse(str(spec)) == spec
    assert str(FaultSpec.parse("task_error=0.5")) == "task_error=0.5"
    assert not FaultSpec.parse("").active
    assert not FaultSpec.parse("none").active
    assert FaultSpec.parse(" drop = 1 , ").drop == 1.0


@pytest.mark.parametrize(("spec", "words"), [
    ("bogus=0.1", "unknown fault kind 'bogus'"),
    ("drop", "is not KIND=VALUE"),
    ("drop=", "is not KIND=VALUE"),
    ("drop=lots", "'lots' is not a number"),
    ("429=1.5", "between 0 and 1"),
    ("fail=-0.1", "between 0 and 1"),
    ("drop=nan", "not a finite number"),
    ("slow_seconds=-2", "slow_seconds must be ≥ 0"),
    ("drop=0.1,drop=0.2", "given twice"),
])
def test_fault_spec_rejects_bad_specs_clearly(spec: str, words: str) -> None:
    with pytest.raises(ValueError, match=words):
        FaultSpec.parse(spec)


def test_fault_draws_respect_rates() -> None:
    never = FaultInjector(FaultSpec(), 1)
    assert all(never.for_api().error is None for _ in range(200))
    assert all(never.for_task("wiro") is None for _ in range(200))
    always = FaultInjector(FaultSpec(drop=1.0), 1)
    drops = [always.for_api() for _ in range(200)]
    assert all(d.error == "drop" for d in drops)
    assert 40 < sum(d.drop_after for d in drops) < 160  # both sides of task creation (seeded)
    half = FaultInjector(FaultSpec(http_5xx=0.5), 7)
    hits = sum(half.for_download().error == "5xx" for _ in range(1000))
    assert 400 < hits < 600
    doomed = FaultInjector(FaultSpec(task_error=1.0, fail=1.0), 3)
    assert [doomed.for_task("wiro") for _ in range(3)] == ["task_error"] * 3  # first wins
    assert [doomed.for_task("pixwith") for _ in range(3)] == ["fail"] * 3  # Wiro's alone
    assert dict(doomed.decisions) == {"task/wiro": 3, "task/pixwith": 3}


def test_the_nth_decision_of_a_stream_depends_on_the_seed_and_n_only() -> None:
    spec = FaultSpec.parse("429=0.2,5xx=0.2,drop=0.2,slow=0.2,task_error=0.2,fail=0.2,"
                           "truncate=0.2")
    alone = FaultInjector(spec, 42)
    api_alone = [alone.for_api() for _ in range(50)]
    tasks_alone = [alone.for_task("wiro") for _ in range(50)]
    # another run of the same seed: the same calls, interleaved with everything else
    mixed = FaultInjector(spec, 42)
    rng = random.Random(0)
    api_mixed: list[object] = []
    tasks_mixed: list[object] = []
    while len(api_mixed) < 50 or len(tasks_mixed) < 50:
        pick = rng.randrange(5)
        if pick == 0 and len(api_mixed) < 50:
            api_mixed.append(mixed.for_api())
        elif pick == 1 and len(tasks_mixed) < 50:
            tasks_mixed.append(mixed.for_task("wiro"))
        elif pick == 2:
            mixed.for_download()
        elif pick == 3:
            mixed.for_task("pixwith")
        else:
            mixed.for_upload()
    assert api_mixed == api_alone
    assert tasks_mixed == tasks_alone
    # … and a spec changed on the way carries the streams on where they were
    switched = FaultInjector(spec, 42)
    first = [switched.for_api() for _ in range(20)]
    switched = switched.with_spec(FaultSpec())
    assert all(switched.for_api().error is None for _ in range(10))
    switched = switched.with_spec(spec)
    assert first + [switched.for_api() for _ in range(20)] == api_alone[:20] + api_alone[30:]
    other = FaultInjector(spec, 43)
    assert [other.for_api() for _ in range(50)] != api_alone  # another seed, another run


def test_config_credentials_come_from_env_else_demo(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("WIRO_API_KEY", "WIRO_API_SECRET", "PIXWITH_API_KEY"):
        monkeypatch.delenv(var, raising=False)
    cfg = EmulatorConfig()
    assert cfg.credentials == demo_credentials()
    monkeypatch.setenv("WIRO_API_SECRET", "from-env-secret")
    assert EmulatorConfig().credentials["WIRO_API_SECRET"] == "from-env-secret"
    assert "from-env-secret" not in repr(EmulatorConfig())
    env = {"WIRO_API_KEY": "k1", "PIXWITH_API_KEY": "p1"}
    cfg = EmulatorConfig.from_env(env, latency=0.5)
    assert (cfg.credentials["WIRO_API_KEY"], cfg.credentials["WIRO_API_SECRET"],
            cfg.credentials["PIXWITH_API_KEY"], cfg.latency) == (
        "k1", demo_credentials()["WIRO_API_SECRET"], "p1", 0.5)
    # given ones win over the environment; the others still come from it
    given = EmulatorConfig(credentials={"WIRO_API_KEY": "given"})
    assert (given.credentials["WIRO_API_KEY"], given.credentials["WIRO_API_SECRET"]) == (
        "given", "from-env-secret")


@pytest.mark.parametrize("kwargs", [{"latency": -1}, {"jitter": 2}, {"concurrency": 0},
                                    {"image_size": "huge"}, {"output_pad_bytes": -5}])
def test_config_rejects_nonsense(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - each field has its own message
        EmulatorConfig(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(("requested", "mode", "expected"), [
    ((2048, 2048), "small", (256, 256)),
    ((2560, 1440), "small", (256, 144)),
    ((1512, 648), "small", (256, 110)),
    ((720, 1280), "small", (144, 256)),
    ((1280, 720), "full", (1280, 720)),
])
def test_output_size(requested: tuple[int, int], mode: str, expected: tuple[int, int]) -> None:
    assert output_size(*requested, mode) == expected


def test_render_is_a_deterministic_png_showing_the_prompt() -> None:
    one = render_png("a red fox in snow", 256, 144, "v4 · 1/1")
    assert one == render_png("a red fox in snow", 256, 144, "v4 · 1/1")
    assert one != render_png("a blue whale", 256, 144, "v4 · 1/1")
    image = Image.open(io.BytesIO(one))
    assert image.format == "PNG"
    assert image.size == (256, 144)
    # the text is drawn: the prompt's image differs from the bare gradient's
    bare = Image.open(io.BytesIO(render_png("a red fox in snow", 256, 144, "")))
    plain = render_png(" ", 256, 144, "")
    assert ImageStat.Stat(image.convert("L")).stddev[0] > 5
    assert image.tobytes() != bare.tobytes()
    assert one != plain


def plain_render(prompt: str, width: int, height: int, caption: str) -> bytes:
    """The outputs' drawing done the plain way, nothing kept between calls (a fresh font,
    Image.composite): what render_png, with what it keeps, must give byte for byte."""
    digest = hashlib.sha256(prompt.encode("utf-8")).digest()
    first, second, style = (digest[0], digest[1], digest[2]), (digest[3], digest[4],
                                                              digest[5]), digest[6] % 3
    mask = Image.linear_gradient("L") if style != 2 else Image.radial_gradient("L")
    if style == 1:
        mask = mask.transpose(Image.Transpose.ROTATE_90)
    mask = mask.resize((width, height))
    image = Image.composite(Image.new("RGB", (width, height), first),
                            Image.new("RGB", (width, height), second), mask)
    draw = ImageDraw.Draw(image)
    mean = [(a + b) / 2 for a, b in zip(first, second, strict=True)]
    light = 0.299 * mean[0] + 0.587 * mean[1] + 0.114 * mean[2] > 140
    ink, halo = ((0, 0, 0), (255, 255, 255)) if light else ((255, 255, 255), (0, 0, 0))
    size = max(8, min(width, height) // 14)
    font = ImageFont.load_default(size=size)
    margin = max(2, size // 2)
    columns = max(4, int((width - 2 * margin) / (size * 0.55)))
    max_lines = max(1, (height - 3 * margin - size) // (size + size // 4))
    lines = textwrap.wrap(prompt, columns) or [""]
    if len(lines) > max_lines:
        lines = lines[:max_lines]
        lines[-1] = lines[-1][: max(0, columns - 1)] + "…"
    stroke = max(1, size // 12)
    y = margin
    for line in lines:
        draw.text((margin, y), line, font=font, fill=ink, stroke_width=stroke, stroke_fill=halo)
        y += size + size // 4
    if caption:
        draw.text((margin, height - margin - size), caption, font=font, fill=ink,
                  stroke_width=stroke, stroke_fill=halo)
    out = io.BytesIO()
    image.save(out, format="PNG", compress_level=1)
    return out.getvalue()


def test_what_rendering_keeps_changes_no_byte_of_an_output() -> None:
    # prompts of each gradient style, repeated lines and captions (masks and outputs found
    # again), sizes whose fonts differ; rendered from several threads at once, twice
    rng = random.Random(3)
    words = ("a", "red", "fox", "in", "snow", "over", "the", "blue", "hills", "at", "dusk,",
             "東京", "café")
    cases = []
    for i in range(48):
        prompt = " ".join(rng.choice(words) for _ in range(rng.randint(1, 30))) + f" {i % 12}"
        width, height = rng.choice([(256, 256), (256, 144), (144, 256), (512, 320)])
        cases.append((prompt, width, height, rng.choice(["v4 · 1/1", "4.5 · 2/4", ""])))
    assert {hashlib.sha256(c[0].encode()).digest()[6] % 3 for c in cases} == {0, 1, 2}
    expected = [plain_render(*case) for case in cases]
    with ThreadPoolExecutor(4) as pool:
        for _ in range(2):
            assert list(pool.map(lambda case: render_png(*case), cases)) == expected
    assert len(images._MASKS.items) > 0  # the masks were kept (and found again)


def test_the_outputs_kept_are_bounded_in_number_and_size() -> None:
    cache = images._Cache(entries=3, size=10, measure=len)
    for key in "abc":
        cache.put(key, b"xx")
    assert cache.get("a") == b"xx"  # now the most recent
    cache.put("d", b"xx")  # over 3 entries: the least recent (b) goes
    assert cache.get("b") is None
    assert [cache.get(k) for k in "acd"] == [b"xx"] * 3
    cache.put("e", b"x" * 11)  # bigger than the whole budget: not kept
    assert cache.get("e") is None
    cache.put("f", b"x" * 8)  # over 10 bytes: the oldest go until it fits
    assert cache.get("f") == b"x" * 8
    assert cache.held <= 10
    assert [k for k in "acd" if cache.get(k) is not None] == ["d"]
    # make_output answers again from what it kept: the very same bytes object
    one = make_output("kept output", 1024, 1024, mode="small", caption="v4 · 1/1")
    assert make_output("kept output", 1024, 1024, mode="small", caption="v4 · 1/1") is one


def test_padding_reaches_the_size_and_keeps_a_valid_png() -> None:
    png = make_output("padded", 512, 512, mode="small")
    assert pad_png(png, 10) is png  # already big enough
    padded = make_output("padded", 512, 512, mode="small", pad_to=1_000_000)
    assert len(padded) == 1_000_000
    image = Image.open(io.BytesIO(padded))
    image.load()
    assert image.size == (256, 256)
    # the padding is one ancillary chunk right before IEND
    assert padded.endswith(b"\x00\x00\x00\x00IEND\xaeB`\x82")
    length = len(padded) - len(png) - 12
    assert struct.pack(">I", length) + b"paDd" in padded
    with pytest.raises(ValueError, match="not a PNG"):
        pad_png(b"GIF89a....", 100)
