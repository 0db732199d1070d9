"""Fault specs, emulator settings and the rendered outputs."""

from __future__ import annotations

import io
import random
import struct

import pytest
from PIL import Image, ImageStat

from runner.config import demo_credentials
from runner.emulator import EmulatorConfig, FaultSpec
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
