"""The emulator over a real loopback socket (serve_in_thread): faults as the network shows them."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from runner.config import demo_credentials
from runner.emulator import EmulatorConfig, serve_in_thread

pytestmark = pytest.mark.e2e

V4 = "bytedance/seedream-v4"


def config(**kwargs: Any) -> EmulatorConfig:
    return EmulatorConfig(credentials=demo_credentials(), **kwargs)


def wait_done(client: httpx.Client, base: str, taskid: str,
              sign: Callable[..., dict[str, str]]) -> dict[str, Any]:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        task = client.post(f"{base}/Task/Detail", json={"taskid": taskid},
                           headers=sign()).json()["tasklist"][0]
        if task["status"] in ("task_postprocess_end", "task_cancel"):
            return task  # type: ignore[no-any-return]
        time.sleep(0.05)
    raise AssertionError("task did not finish")


def test_serve_in_thread_round_trip_and_clean_shutdown(sign: Callable[..., Any]) -> None:
    with serve_in_thread(config(latency=0.2, output_pad_bytes=3_000_000)) as server:
        assert server.url.startswith("http://127.0.0.1:")
        assert server.wiro_base_url == f"{server.url}/wiro/v1"
        assert server.pixwith_base_url == f"{server.url}/pixwith/api"
        with httpx.Client(timeout=10) as client:
            run = client.post(f"{server.wiro_base_url}/Run/{V4}", headers=sign(),
                              files={"prompt": (None, "over a socket")}).json()
            task = wait_done(client, server.wiro_base_url, run["taskid"], sign)
            out = task["outputs"][0]
            assert out["url"].startswith(f"{server.url}/files/")  # absolute, this server
            with client.stream("GET", out["url"]) as response:
                assert response.headers["content-length"] == out["size"]
                received = sum(len(chunk) for chunk in response.iter_bytes())
            assert received == int(out["size"]) >= 3_000_000
        stats = server.stats()
        assert stats["tasks_billed"] == 1
        assert stats["download_bytes"] == received
        server.reset()
        assert server.stats()["requests_total"] == 0
        url = server.url
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{url}/__stats", timeout=2)


def test_drop_closes_the_socket_without_an_answer(sign: Callable[..., Any]) -> None:
    with serve_in_thread(config(faults="drop=1", seed=2)) as server, \
            httpx.Client(timeout=5) as client:
        for _ in range(6):
            with pytest.raises(httpx.TransportError):
                client.post(f"{server.wiro_base_url}/Run/{V4}", headers=sign(),
                            json={"prompt": "lost"})
        stats = server.stats()  # the server survives its own drops
        assert stats["faults"]["drop"] == 6
        assert stats["tasks_created_total"] == stats["faults"]["drop_after"]
        server.set_faults("none")
        ok = client.post(f"{server.wiro_base_url}/Run/{V4}", headers=sign(),
                         json={"prompt": "found"})
        assert ok.json()["result"] is True


def test_truncate_stops_short_of_content_length(sign: Callable[..., Any]) -> None:
    with serve_in_thread(config(latency=0.0, output_pad_bytes=2_000_000)) as server, \
            httpx.Client(timeout=5) as client:
        run = client.post(f"{server.wiro_base_url}/Run/{V4}", headers=sign(),
                          json={"prompt": "cut"}).json()
        out = wait_done(client, server.wiro_base_url, run["taskid"], sign)["outputs"][0]
        server.set_faults("truncate=1")
        chunks: list[int] = []

        def download() -> None:
            with client.stream("GET", out["url"]) as resp:
                assert resp.headers["content-length"] == out["size"]
                chunks.extend(len(chunk) for chunk in resp.iter_bytes())

        with pytest.raises(httpx.RemoteProtocolError):
            download()
        assert 0 < sum(chunks) < int(out["size"])
        assert server.stats()["faults"]["truncate"] == 1


def test_refusals_keep_the_connection_usable(sign: Callable[..., Any]) -> None:
    # a 429 or 5xx must not poison a kept-alive connection: every request gets an answer
    with serve_in_thread(config(faults="429=1", seed=4)) as server, \
            httpx.Client(timeout=5) as client:
        image = b"\x89PNG" + b"\0" * 200_000
        for spec, expected in (("429=1", {429}), ("5xx=1", {500, 502, 503})):
            server.set_faults(spec)
            for _ in range(8):
                response = client.post(f"{server.wiro_base_url}/Run/{V4}", headers=sign(),
                                       files={"prompt": (None, "x"),
                                              "inputImage": ("a.png", image, "image/png")})
                assert response.status_code in expected
        stats = server.stats()
        assert stats["faults"]["429"] == 8
        assert stats["faults"]["5xx"] == 8
        assert stats["tasks_created_total"] == 0
