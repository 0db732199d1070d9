"""Wiro's request signature and nonces."""

from __future__ import annotations

import itertools
import shutil
import subprocess
import threading

import anyio
import httpx
import pytest

from runner.providers.wiro import NonceSource, WiroAuth, sign

from .conftest import WIRO_KEY, WIRO_SECRET, json_response, vendor_json, wiro_client

OPENSSL = shutil.which("openssl")


def openssl_signature(key: str, secret: str, nonce: str) -> str:
    """What the vendor's shell recipe computes:
    echo -n "${SECRET}${NONCE}" | openssl dgst -sha256 -hmac "${KEY}"."""
    assert OPENSSL, "openssl is needed to check signatures against the vendor's recipe"
    out = subprocess.run([OPENSSL, "dgst", "-sha256", "-hmac", key],
                         input=(secret + nonce).encode(), capture_output=True, check=True)
    return out.stdout.decode().strip().rsplit("= ", 1)[-1]


@pytest.mark.parametrize(
    ("key", "secret", "nonce"),
    [
        (WIRO_KEY, WIRO_SECRET, "1734513807"),
        ("k", "s", "0"),
        ("9f8e7d6c5b4a39281706f5e4d3c2b1a0", "XXXXXXXXX", "1734513807123"),
        ("key with spaces & symbols!", "secret/with+chars=", "42"),
    ],
)
def test_signature_matches_openssl(key: str, secret: str, nonce: str) -> None:
    expected = openssl_signature(key, secret, nonce)
    assert len(expected) == 64
    assert sign(key, secret, nonce) == expected


def test_signature_depends_on_every_input() -> None:
    base = sign("k", "s", "1")
    assert sign("k2", "s", "1") != base
    assert sign("k", "s2", "1") != base
    assert sign("k", "s", "2") != base
    # key and message are not interchangeable: HMAC(key=KEY, msg=SECRET+NONCE)
    assert sign("s1", "k", "") != sign("k", "s", "1")


@pytest.mark.anyio
async def test_request_headers_carry_a_signature_openssl_agrees_with() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return json_response(vendor_json("wiro_v4-5_task_detail.txt"))

    async with wiro_client(handler) as client:
        await client.poll("2221")
        await client.poll("2221")
    assert len(seen) == 2
    nonces = [r.headers["x-nonce"] for r in seen]
    assert nonces[0] != nonces[1]
    for request in seen:
        assert request.headers["x-api-key"] == WIRO_KEY
        nonce = request.headers["x-nonce"]
        assert nonce.isdigit()
        assert request.headers["x-signature"] == openssl_signature(WIRO_KEY, WIRO_SECRET, nonce)
        assert WIRO_SECRET not in str(request.headers)  # the secret itself never travels


def test_auth_repr_hides_credentials() -> None:
    auth = WiroAuth(WIRO_KEY, WIRO_SECRET)
    assert WIRO_KEY not in repr(auth)
    assert WIRO_SECRET not in repr(auth)


def test_nonces_are_milliseconds_and_survive_a_frozen_or_backward_clock() -> None:
    times = iter([1000.0, 1000.0, 1000.0, 999.0, 1000.5, 2000.0])
    source = NonceSource(clock=lambda: next(times))
    got = [source.next() for _ in range(6)]
    assert got == [1_000_000, 1_000_001, 1_000_002, 1_000_003, 1_000_500, 2_000_000]


def test_nonces_unique_across_threads() -> None:
    source = NonceSource(clock=lambda: 1_700_000_000.0)  # a frozen clock: worst case
    per_thread: list[list[int]] = [[] for _ in range(8)]

    def work(bucket: list[int]) -> None:
        for _ in range(1000):
            bucket.append(source.next())

    threads = [threading.Thread(target=work, args=(b,)) for b in per_thread]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    everything = list(itertools.chain.from_iterable(per_thread))
    assert len(everything) == 8000
    assert len(set(everything)) == 8000
    for bucket in per_thread:
        assert bucket == sorted(bucket)  # strictly increasing as each thread sees them
        assert len(set(bucket)) == len(bucket)


@pytest.mark.anyio
async def test_nonces_unique_across_5000_concurrent_requests() -> None:
    nonces: list[str] = []
    bad: list[str] = []
    detail = vendor_json("wiro_v4_run.txt")

    def handler(request: httpx.Request) -> httpx.Response:
        nonce = request.headers["x-nonce"]
        nonces.append(nonce)
        if request.headers["x-signature"] != sign(WIRO_KEY, WIRO_SECRET, nonce):
            bad.append(nonce)
        return json_response({**detail, "tasklist": [{"id": "1", "status": "task_queue"}]})

    async with wiro_client(handler, concurrency=64) as client:
        async with anyio.create_task_group() as tg:
            for _ in range(5000):
                tg.start_soon(client.poll, "1")
        assert client.requests_sent["poll"] == 5000
    assert len(nonces) == 5000
    assert len(set(nonces)) == 5000
    assert bad == []


@pytest.mark.anyio
async def test_clients_of_one_process_share_the_nonce_sequence() -> None:
    nonces: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        nonces.append(request.headers["x-nonce"])
        return json_response({"result": True, "errors": [],
                              "tasklist": [{"id": "1", "status": "task_queue"}]})

    first, second = wiro_client(handler), wiro_client(handler)
    assert first.auth.nonces is second.auth.nonces
    async with first, second:
        for _ in range(50):
            await first.poll("1")
            await second.poll("1")
    assert len(set(nonces)) == 100
