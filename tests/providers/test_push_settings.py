"""Pushed completion: reading Wiro's socket frames, and where (whether) a run listens."""

from __future__ import annotations

import json
from typing import Any

import pytest

from runner.config import push_url_for, resolve
from runner.errors import ConfigError
from runner.providers.push import PushChannel, PushEvent
from runner.providers.wiro import parse_socket_frame, socket_frame, socket_frame_matters

TOKEN = "eDcCm5yyAbc"


def frame(kind: str, message: object = None) -> dict[str, object]:
    return {"type": kind, "id": "2221", "tasktoken": TOKEN, "message": message,
            "result": True}


def test_subscription_frame_is_the_documented_one() -> None:
    assert socket_frame(TOKEN) == '{"type": "task_info", "tasktoken": "eDcCm5yyAbc"}'


@pytest.mark.parametrize("kind", ["task_postprocess_end", "task_cancel"])
def test_the_final_frames_end_the_wait(kind: str) -> None:
    assert parse_socket_frame(frame(kind, [])) == PushEvent(TOKEN, "end")


@pytest.mark.parametrize("kind", ["task_queue", "task_start", "task_end", "task_error",
                                  "task_error_full", "task_output_full",
                                  "task_postprocess_start", "something_new"])
def test_every_other_frame_is_activity_task_end_and_task_error_included(kind: str) -> None:
    # task_end comes before post-processing; task_error on the socket is stderr (interim)
    assert parse_socket_frame(frame(kind, "stderr line")) == PushEvent(TOKEN, "activity")


def test_progress_frames_carry_their_percentage() -> None:
    progress = {"type": "progressGenerate", "task": "Generating", "percentage": "42.5",
                "stepCurrent": "8", "stepTotal": "20"}
    assert parse_socket_frame(frame("task_output", progress)) == PushEvent(TOKEN, "progress",
                                                                           42.5)
    wild = {**progress, "percentage": "180"}
    assert parse_socket_frame(frame("task_output", wild)) == PushEvent(TOKEN, "progress", 100.0)
    text = parse_socket_frame(frame("task_output", "Step 1/10"))
    assert text == PushEvent(TOKEN, "activity")


@pytest.mark.parametrize("doc", [{"type": "task_cancel"}, {"tasktoken": TOKEN},
                                 {"type": 3, "tasktoken": TOKEN}, {"type": "x", "tasktoken": ""}])
def test_frames_without_a_token_or_type_are_ignored(doc: dict[str, object]) -> None:
    assert parse_socket_frame(doc) is None


def _emulated_frames(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """Every frame the emulator's Wiro socket sends for a task that succeeds, one that
    fails in its model and one that is cancelled."""
    from runner.emulator import wiro as emu

    class FakeTask:
        id, token, duration, created, finished = "7", TOKEN, 10.0, 0.0, 10.0
        images, task_error = 1, False

        def __init__(self, fails: bool, outcome: str) -> None:
            self.fails, self.outcome = fails, outcome

    output = {"name": "0.png", "contenttype": "image/png", "size": "9", "url": "http://x/0"}
    monkeypatch.setattr(emu, "task_json", lambda *a, **k: {"outputs": [output]})
    frames: list[dict[str, Any]] = []
    for fails, outcome in ((False, "succeeded"), (True, "failed"), (False, "cancelled")):
        task = FakeTask(fails, outcome)
        for index in range(len(emu.STAGES) + 1):
            frames.extend(emu.socket_frames(task, index, "http://x"))  # type: ignore[arg-type]
    return frames


def test_only_frames_that_end_a_wait_or_carry_progress_are_decoded(
        monkeypatch: pytest.MonkeyPatch) -> None:
    frames = _emulated_frames(monkeypatch)
    kinds = {f["type"] for f in frames}
    assert {"task_postprocess_end", "task_cancel", "task_output", "task_queue"} <= kinds
    skipped = 0
    for doc in frames:
        text = json.dumps(doc)
        event = parse_socket_frame(doc)
        assert event is not None
        if socket_frame_matters(text):
            continue
        skipped += 1
        assert event.kind == "activity", doc  # nothing skipped is an end or a progress
    assert skipped >= len(frames) // 2  # most of a task's frames are mere stage changes
    ends = [json.dumps(frame(kind, [])) for kind in ("task_postprocess_end", "task_cancel")]
    assert all(socket_frame_matters(text) for text in ends)


def test_the_channel_does_not_decode_the_frames_its_host_does_not_want() -> None:
    parsed: list[object] = []

    def parse(doc: Any) -> PushEvent | None:
        parsed.append(doc)
        return None

    channel = PushChannel("ws://x", frame=socket_frame, parse=parse,
                          wanted=lambda text: "keep" in text)
    channel.on_frame(None, '{"type": "skip"}')  # type: ignore[arg-type]
    channel.on_frame(None, '{"type": "keep"}')  # type: ignore[arg-type]
    assert parsed == [{"type": "keep"}]


ENV = {"WIRO_API_KEY": "k", "WIRO_API_SECRET": "s"}


def test_the_public_endpoint_listens_on_the_public_socket() -> None:
    settings = resolve("wiro", None, ENV)
    assert settings.push_url == "wss://socket.wiro.ai/v1"


def test_wiro_socket_url_points_the_client_elsewhere() -> None:
    env = {**ENV, "WIRO_SOCKET_URL": "ws://127.0.0.1:8765/wiro/socket/v1"}
    assert resolve("wiro", None, env).push_url == env["WIRO_SOCKET_URL"]


@pytest.mark.parametrize("value", ["0", "false", "off", "no"])
def test_seedbatch_realtime_off_polls(value: str) -> None:
    env = {**ENV, "SEEDBATCH_REALTIME": value, "WIRO_SOCKET_URL": "wss://elsewhere/v1"}
    assert resolve("wiro", None, env).push_url is None


def test_the_manifest_switch_polls() -> None:
    assert resolve("wiro", {"wiro": {"realtime": False}}, ENV).push_url is None
    assert resolve("wiro", {"wiro": {"realtime": True}}, ENV).push_url is not None


def test_a_custom_endpoint_polls_unless_told_where_the_socket_is() -> None:
    env = {**ENV, "WIRO_BASE_URL": "https://proxy.example/v1"}
    assert resolve("wiro", None, env).push_url is None


def test_a_host_that_pushes_nothing_has_no_push_url() -> None:
    assert push_url_for("pixwith", "https://api.pixwith.ai/api", None, {}) is None


@pytest.mark.parametrize("url", ["ws://socket.example/v1", "https://socket.example/v1",
                                 "wss://"])
def test_a_bad_socket_url_is_a_clear_error(url: str) -> None:
    with pytest.raises(ConfigError, match="WIRO_SOCKET_URL"):
        resolve("wiro", None, {**ENV, "WIRO_SOCKET_URL": url})
