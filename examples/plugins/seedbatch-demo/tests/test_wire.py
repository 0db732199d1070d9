"""The wire format against the README's own JSON examples, and the answer → error map.

Pure functions (seedbatch_demo.wire, seedbatch_demo.models): no network, no emulator.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from seedbatch_demo import MODELS, SPEC
from seedbatch_demo.wire import create_body, error_for, parse_created, parse_image

from runner.errors import (
    AuthError,
    ConcurrencyLimited,
    InsufficientBalance,
    JobRejected,
    ProviderError,
    RateLimited,
    ServerError,
    UnknownOutcome,
)
from runner.providers.base import RemoteOutput, SubmitResult, TaskState

from .conftest import example, make_job, readme_examples

PATTERN, HD = MODELS


def test_the_readme_shows_every_example_the_tests_rely_on() -> None:
    assert set(readme_examples()) == {
        "create-request", "create-response", "image-running", "image-succeeded",
        "image-failed", "image-canceled", "error-400", "error-401", "error-402", "error-409",
        "error-429"}


# -- requests ---------------------------------------------------------------------------------

def test_the_create_body_is_the_readme_example_byte_for_byte() -> None:
    job = make_job(params={"width": 1024, "height": 768, "n": 2, "seed": 7})
    body = create_body(PATTERN, job)
    assert body == example("create-request")
    assert list(body) == list(example("create-request"))  # the documented order too


def test_every_default_is_sent() -> None:
    assert create_body(PATTERN, make_job(params={})) == {
        "model": "pattern-v1", "prompt": "a teal chevron tile", "width": 1024, "height": 1024,
        "n": 1, "seed": None}
    assert create_body(HD, make_job("demo/pattern-hd-v1", params={"n": 2}))["width"] == 2048


# -- answers ----------------------------------------------------------------------------------

def test_the_create_answer() -> None:
    assert parse_created(example("create-response")) == SubmitResult(
        task_id="img_5f2c0e9a41d34b7f", estimated_seconds=2.0)


@pytest.mark.parametrize("doc", [None, {}, {"id": ""}, {"id": 42}, {"status": "queued"}])
def test_a_create_answer_without_an_id_is_an_unknown_outcome(doc: Any) -> None:
    with pytest.raises(UnknownOutcome, match="may have been created"):
        parse_created(doc)


def test_a_running_image() -> None:
    status = parse_image(example("image-running"), "img_5f2c0e9a41d34b7f")
    assert (status.task_id, status.state, status.provider_status) == (
        "img_5f2c0e9a41d34b7f", TaskState.RUNNING, "running")
    assert status.outputs == ()
    assert status.cost_usd is None


def test_a_succeeded_image_lists_its_outputs_and_cost() -> None:
    status = parse_image(example("image-succeeded"), "img_5f2c0e9a41d34b7f")
    assert status.state is TaskState.SUCCEEDED
    assert status.outputs == (
        RemoteOutput("https://cdn.demo-images.invalid/img_5f2c0e9a41d34b7f/0.png", "0.png",
                     "image/png"),
        RemoteOutput("https://cdn.demo-images.invalid/img_5f2c0e9a41d34b7f/1.png", "1.png",
                     "image/png"))
    assert status.cost_usd == pytest.approx(0.004)
    assert status.cost_usd == pytest.approx(2 * PATTERN.price.usd_per_image)  # n × list price
    assert status.error is None


def test_a_failed_image_carries_the_reason_and_no_cost() -> None:
    status = parse_image(example("image-failed"), "x")
    assert status.state is TaskState.FAILED
    assert status.error == "the pattern generator failed on this prompt"
    assert status.cost_usd == 0.0


def test_a_canceled_image() -> None:
    status = parse_image(example("image-canceled"), "x")
    assert (status.state, status.provider_status, status.cost_usd) == (
        TaskState.CANCELLED, "canceled", 0.0)


def test_success_without_outputs_is_a_failure_and_an_unknown_word_is_running() -> None:
    empty = dict(example("image-succeeded"), outputs=[])
    assert parse_image(empty, "x").state is TaskState.FAILED
    assert "without any output" in (parse_image(empty, "x").error or "")
    odd = dict(example("image-running"), status="warming_up")
    assert parse_image(odd, "x").state is TaskState.RUNNING
    assert parse_image(odd, "x").provider_status == "warming_up"


# -- errors -----------------------------------------------------------------------------------

def answer(status: int, doc: Any = None, text: str = "",
           headers: dict[str, str] | None = None) -> httpx.Response:
    if doc is not None:
        return httpx.Response(status, json=doc, headers=headers)
    return httpx.Response(status, text=text, headers=headers)


GATEWAY = "<html><body><h1>504 Gateway Time-out</h1></body></html>"


@pytest.mark.parametrize(("response", "op", "kind", "words"), [
    (answer(400, example("error-400")), "submit", JobRejected,
     "refused the request (parameter width) — HTTP 400 invalid_request: demo/pattern-v1: 4096 "
     "is greater than the maximum of 2048"),
    (answer(401, example("error-401")), "submit", AuthError, "refused the API key"),
    (answer(401, example("error-401")), "poll", AuthError, "HTTP 401 unauthorized"),
    (answer(403, text="Forbidden"), "poll", AuthError, "HTTP 403: Forbidden"),
    (answer(402, example("error-402")), "submit", InsufficientBalance,
     "this request costs $0.0040; the balance is $0.0010"),
    (answer(404, {"error": {"code": "not_found", "message": "no image job 'img_x'"}}), "poll",
     JobRejected, "no image job img_x"),
    (answer(409, example("error-409")), "cancel", JobRejected, "can no longer be canceled"),
    (answer(429, example("error-429"), headers={"Retry-After": "3"}), "submit",
     ConcurrencyLimited, "busy with this account's image jobs"),
    (answer(429, {"error": {"code": "rate_limited", "message": "slow down"}},
            headers={"Retry-After": "7"}), "poll", RateLimited, "rate limit"),
    (answer(429, text="Too many requests, please slow down."), "submit", RateLimited,
     "Too many requests"),
    (answer(500, {"error": {"code": "server_error", "message": "boom"}}), "submit",
     ServerError, "HTTP 500 server_error: boom"),
    (answer(502, text="<html>502 Bad Gateway</html>"), "submit", ServerError, "502"),
    (answer(503, text="unavailable"), "poll", ServerError, "503"),
    (answer(408, text="timeout"), "submit", ServerError, "408"),
    (answer(504, text=GATEWAY), "submit", UnknownOutcome, "may have been created"),
    (answer(504, text=GATEWAY), "poll", ServerError, "504"),
    (answer(504, text=GATEWAY), "cancel", ServerError, "504"),
], ids=lambda v: str(v) if isinstance(v, str) and len(v) < 12 else None)
def test_each_answer_becomes_its_documented_error(response: httpx.Response, op: str,
                                                  kind: type[ProviderError], words: str) -> None:
    err = error_for(response, op=op, subject="img_x")
    assert type(err) is kind
    assert words in str(err)
    assert err.provider == "demo"
    assert err.http_status == response.status_code


def test_retry_after_is_kept_in_seconds() -> None:
    busy = error_for(answer(429, example("error-429"), headers={"Retry-After": "3"}),
                     op="submit")
    limited = error_for(answer(429, text="x", headers={"Retry-After": "7"}), op="poll")
    assert (busy.retry_after, limited.retry_after) == (3.0, 7.0)
    assert error_for(answer(429, text="x"), op="poll").retry_after is None


def test_a_key_in_an_answer_is_masked() -> None:
    err = error_for(answer(500, text="upstream said: bad key sk-live-123 rejected"),
                    op="poll", secrets=("sk-live-123",))
    assert "sk-live-123" not in str(err)
    assert "***" in str(err)


# -- models -----------------------------------------------------------------------------------

def test_the_spec_registers_what_the_readme_says() -> None:
    assert SPEC.name == "demo"
    assert [m.id for m in SPEC.models] == ["demo/pattern-v1", "demo/pattern-hd-v1"]
    assert (SPEC.credentials, SPEC.base_url_var, SPEC.default_base_url) == (
        ("DEMO_API_KEY",), "DEMO_BASE_URL", "https://api.demo-images.invalid/v1")
    assert SPEC.emulator is not None
    assert (SPEC.emulator.path, dict(SPEC.emulator.credentials)) == (
        "/demo/v1", {"DEMO_API_KEY": "demo-key"})
    assert (PATTERN.price.usd_per_image, HD.price.usd_per_image) == (0.002, 0.008)


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.id)
def test_the_defaults_are_valid_and_the_limits_are_read_from_the_schema(model: Any) -> None:
    assert model.check(model.with_defaults({}), 0) == []
    assert model.max_input_images == 0
    assert model.outputs_param == "n"


def test_the_request_pixel_rule() -> None:
    ok = PATTERN.with_defaults({"width": 2048, "height": 2048, "n": 1})
    assert PATTERN.check(ok, 0) == []
    assert PATTERN.check(PATTERN.with_defaults({"n": 4}), 0) == []  # 4 × 1024² is the limit
    assert PATTERN.check(PATTERN.with_defaults({"width": 2048, "height": 1024, "n": 3}), 0) == [
        ("params.n", "demo/pattern-v1: n × width × height = 3×2048×1024 = 6,291,456 pixels; "
                     "one request renders at most 4,194,304 (lower n, or the size)")]
    assert HD.check(HD.with_defaults({"width": 4096, "height": 4096, "n": 2}), 0)[0][0] == \
        "params.n"


def test_schema_limits_and_reference_images() -> None:
    assert PATTERN.check(PATTERN.with_defaults({"width": 1000}), 0) == [
        ("params.width", "demo/pattern-v1: 1000 is not a multiple of 64")]
    assert PATTERN.check(PATTERN.with_defaults({"width": 4096}), 0) == [
        ("params.width", "demo/pattern-v1: 4096 is greater than the maximum of 2048")]
    assert PATTERN.check(PATTERN.with_defaults({"seed": -1}), 0)[0][0] == "params.seed"
    assert PATTERN.check(PATTERN.with_defaults({}), 1) == [
        ("images", "demo/pattern-v1 is text-to-image only and takes no reference images "
                   "(1 given)")]
