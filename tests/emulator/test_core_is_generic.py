"""The emulator's shared core names no provider: every host-specific piece lives in the
host's own emulator files, and a plugin's emulator plugs in exactly like the built-ins.

The second half serves a registry that holds only a made-up third provider, ``acme``, whose
whole emulator is defined here: two routes, an account with a balance, its own error
envelope. Faults, billing, counters, files and the index apply to it as to any host."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from runner.config import EMULATOR_IDENTITY
from runner.emulator import (
    EmulatorConfig,
    EmulatorState,
    Kit,
    ProviderContext,
    ProviderState,
    create_app,
    serve_in_thread,
)
from runner.emulator.faults import expected_faults
from runner.errors import ConfigError
from runner.jobs import Price
from runner.plugins import Origin, Registry, registry
from runner.spec import EmulatorSpec, ModelSpec, ProviderSpec

from .conftest import FakeClock

pytestmark = pytest.mark.anyio

ROOT = Path(__file__).resolve().parents[2]
EMULATOR = ROOT / "runner" / "emulator"
BUILT_IN = ("wiro", "pixwith")


def own_files(name: str) -> list[Path]:
    """A provider's own emulator files: ``<name>*.py`` or a package ``<name>*/``."""
    return sorted(p for p in EMULATOR.rglob("*.py")
                  if p.relative_to(EMULATOR).parts[0].lower().startswith(name))


def test_only_a_providers_own_emulator_files_name_it() -> None:
    names = sorted({*BUILT_IN, *registry().providers})
    # a name as a word of its own letters ("fal" names fal.ai, not False)
    pattern = re.compile("(?<![a-z])(?:" + "|".join(map(re.escape, names)) + ")(?![a-z])",
                         re.IGNORECASE)
    for name in BUILT_IN:
        assert own_files(name), f"no emulator files of {name}: the scan would prove nothing"
    allowed = {p for name in names for p in own_files(name)}
    named = [f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
             for path in sorted(EMULATOR.rglob("*.py")) if path not in allowed
             for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
             if pattern.search(line)]
    assert not named, "the emulator's shared core names a provider:\n" + "\n".join(named)


# --- a third provider, defined here ---------------------------------------------------------
ACME = "acme"
KEY_VAR = "ACME_API_KEY"
DEMO_KEY = "demo-acme-key"
MODEL = ModelSpec(f"{ACME}/fast-v1", ACME, "fast-v1", "Acme Fast",
                  {"type": "object", "properties": {}, "additionalProperties": False},
                  Price(usd_per_image=0.25))


class AcmeState(ProviderState):
    """Acme's account: a balance in USD and ids of its own."""

    def __init__(self, context: ProviderContext) -> None:
        super().__init__(context)
        self.balance = float(self.options["balance"])
        self.issued = 0

    def new_id(self) -> str:
        self.issued += 1
        return f"job-{self.issued}"

    def bill(self, task: Any) -> None:
        super().bill(task)  # list price: ModelSpec.price
        self.balance -= task.cost_usd

    def balances(self) -> dict[str, Any]:
        return {"acme_usd": round(self.balance, 12)}


def acme_error(status: int, message: str, headers: Any) -> Response:
    return JSONResponse({"acme_error": message}, status_code=status,
                        headers=dict(headers) if headers else None)


async def submit(request: Request, state: EmulatorState) -> Response:
    part = state.part(ACME)
    if request.headers.get("authorization") != f"Bearer {part.credentials[KEY_VAR]}":
        state.stats.rejections["auth"] += 1
        return acme_error(401, "bad key", None)
    doc = json.loads(await request.body())
    task = state.new_task(ACME, model=MODEL.endpoint, prompt=doc["prompt"],
                          images=doc.get("n", 1), width=96, height=64)
    return JSONResponse({"id": task.id})


async def status(request: Request, state: EmulatorState) -> Response:
    task = state.tasks.get((ACME, request.path_params["id"]))
    if task is None:
        return acme_error(404, "no such job", None)
    state.count_poll(task)
    base = str(request.base_url).rstrip("/")
    return JSONResponse({"status": task.outcome or "running",
                         "urls": [f"{base}/files/{o.file.path}" for o in task.outputs]})


def routes(kit: Kit) -> Sequence[BaseRoute]:
    return [Route(f"{kit.path}/jobs", kit.api(submit), methods=["POST"]),
            Route(f"{kit.path}/jobs/{{id}}", kit.api(status), methods=["GET"])]


def acme_spec(**emulator: Any) -> ProviderSpec:
    def client(*_args: Any, **_kwargs: Any) -> Any:
        raise AssertionError("the emulator never makes a client")

    emulator.setdefault("credentials", {KEY_VAR: DEMO_KEY})
    return ProviderSpec(name=ACME, title="Acme", models=(MODEL,), credentials=(KEY_VAR,),
                        base_url_var="ACME_BASE_URL", default_base_url="https://api.acme.test",
                        client=client, emulator=EmulatorSpec(path="/acme/v1", routes=routes,
                                                             **emulator))


def only(spec: ProviderSpec) -> Registry:
    reg = Registry()
    reg.add(spec, Origin("acme = tests.emulator.test_core_is_generic:SPEC"))
    assert not reg.problems
    return reg


FULL = acme_spec(options={"balance": 10.0}, make_state=AcmeState, errors=acme_error)
AUTH = {"authorization": f"Bearer {DEMO_KEY}"}


@pytest.fixture(autouse=True)
def no_acme_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(KEY_VAR, raising=False)


@asynccontextmanager
async def acme(spec: ProviderSpec = FULL, clock: FakeClock | None = None,
               **config: Any) -> AsyncIterator[tuple[httpx.AsyncClient, EmulatorState]]:
    config.setdefault("latency", 1.0)
    app = create_app(EmulatorConfig(**config), clock=clock, registry=only(spec))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://emu") as client:
        yield client, app.state.emulator


async def test_a_third_provider_alone_is_served_billed_and_counted(clock: FakeClock) -> None:
    async with acme(clock=clock) as (client, state):
        assert state.providers == (ACME,)
        created = await client.post("/acme/v1/jobs", json={"prompt": "a kite", "n": 2},
                                    headers=AUTH)
        assert created.json() == {"id": "job-1"}
        running = (await client.get("/acme/v1/jobs/job-1")).json()
        assert running == {"status": "running", "urls": []}
        clock.advance(1.0)
        done = (await client.get("/acme/v1/jobs/job-1")).json()
        assert done["status"] == "succeeded"
        assert len(done["urls"]) == 2
        image = await client.get(done["urls"][0])
        assert image.status_code == 200
        assert image.content.startswith(b"\x89PNG")
        refused = await client.post("/acme/v1/jobs", json={"prompt": "x"},
                                    headers={"authorization": "Bearer wrong"})
        assert refused.status_code == 401
        stats = (await client.get("/__stats")).json()
        assert stats["tasks_created"] == {ACME: {"fast-v1": 1}}
        assert (stats["tasks_succeeded"], stats["tasks_billed"], stats["images_billed"]) == (
            1, 1, 2)
        assert stats["billed_usd"] == pytest.approx(0.5)
        assert stats["balances"] == {"acme_usd": 9.5}
        assert stats["active_tasks"] == {ACME: 0}
        assert stats["concurrency_refusals"] == {ACME: 0}
        assert stats["inflight_tasks_peak"] == {ACME: 1}
        assert stats["fault_decisions"] == {"api": 4, "download": 1, "upload": 0, "socket": 0,
                                            f"task/{ACME}": 1}
        assert stats["rejections"] == {"auth": 1}
        assert stats["requests_by_endpoint"]["POST /acme/v1/jobs"] == 2
        assert stats["downloads"] == 1
        assert stats["paid_outputs_unfetched"] == 1
        [task] = state.tasks.values()
        assert (task.polls, task.polls_after_end) == (2, 1)
        index = (await client.get("/__")).json()
        assert index["name"] == EMULATOR_IDENTITY
        assert index["acme_base_url"] == "http://emu/acme/v1"
        assert not [k for k in index if k.endswith("_base_url") and k != "acme_base_url"]
        assert index["config"]["options"] == {ACME: {"balance": 10.0}}
        # nothing else is served: the built-in hosts are not in this registry
        assert (await client.post("/wiro/v1/Task/Detail")).status_code == 404
        assert (await client.post("/pixwith/api/task/get")).status_code == 404
        assert (await client.post("/__reset")).json() == {"ok": True}
        again = (await client.get("/__stats")).json()
        assert again["balances"] == {"acme_usd": 10.0}  # a fresh account
        created = await client.post("/acme/v1/jobs", json={"prompt": "b"}, headers=AUTH)
        assert created.json() == {"id": "job-1"}


async def test_the_shared_faults_meet_it_in_its_own_envelope() -> None:
    async with acme(faults="429=1", seed=3) as (client, state):
        limited = await client.post("/acme/v1/jobs", json={"prompt": "x"}, headers=AUTH)
        assert limited.status_code == 429
        assert limited.json() == {"acme_error": "Too many requests, please slow down."}
        assert not state.tasks
    async with acme(faults="5xx=1", seed=5) as (client, _state):
        statuses = set()
        for _ in range(30):
            failed = await client.post("/acme/v1/jobs", json={"prompt": "x"}, headers=AUTH)
            statuses.add(failed.status_code)
            if failed.status_code == 500:
                assert failed.json() == {"acme_error": "Internal server error"}
            else:
                assert "<html>" in failed.text  # a gateway's page, whoever the host
        assert statuses == {500, 502, 503}
    async with acme(faults="drop=1", seed=11) as (client, state):
        for _ in range(10):
            with pytest.raises(httpx.RemoteProtocolError):
                await client.post("/acme/v1/jobs", json={"prompt": "x"}, headers=AUTH)
        stats = (await client.get("/__stats")).json()
        assert stats["faults"]["drop"] == 10
        # a drop after the handler ran orphans the task it created
        assert 0 < stats["tasks_answer_lost"] == stats["faults"]["drop_after"] == len(
            state.tasks) < 10
        assert all(t.answer_lost for t in state.tasks.values())


async def test_task_fates_follow_the_hosts_own_list(clock: FakeClock) -> None:
    # acme knows "fail" only (the default): task_error is never drawn nor marked for it
    spec = "task_error=1"
    async with acme(clock=clock, faults=spec, seed=1) as (client, state):
        for prompt in ("plain", "emulator:task_error", "emulator:fail"):
            await client.post("/acme/v1/jobs", json={"prompt": prompt}, headers=AUTH)
        clock.advance(1.0)
        stats = (await client.get("/__stats")).json()  # settles the tasks whose time is up
        fates = {t.prompt: t.outcome for t in state.tasks.values()}
        assert fates == {"plain": "succeeded", "emulator:task_error": "succeeded",
                         "emulator:fail": "failed"}
        assert stats["tasks_task_error"] == 0
        assert stats["faults"]["task_error"] == 0
        assert stats["faults"]["fail"] == 1  # the marker
    spec = "fail=0.5,slow=0.2,slow_seconds=0"
    async with acme(clock=clock, faults=spec, seed=9, latency=0) as (client, state):
        for i in range(40):
            await client.post("/acme/v1/jobs", json={"prompt": f"p{i}"}, headers=AUTH)
        stats = (await client.get("/__stats")).json()
        expected = expected_faults(spec, 9, stats["fault_decisions"], {ACME: ("fail",)})
        assert stats["faults"] == dict(expected)
        assert 5 < stats["tasks_failed"] == stats["faults"]["fail"] < 35


async def test_a_host_that_knows_task_error_meets_it() -> None:
    spec = acme_spec(task_faults=("task_error", "fail"))
    async with acme(spec, faults="task_error=1", latency=0) as (client, state):
        await client.post("/acme/v1/jobs", json={"prompt": "x"}, headers=AUTH)
        [task] = state.tasks.values()
        assert (task.task_error, task.outcome, task.cost_usd) == (True, "failed", 0.0)
        assert (await client.get("/__stats")).json()["tasks_task_error"] == 1


async def test_the_defaults_bill_list_prices_and_answer_plain_errors() -> None:
    bare = acme_spec()  # no options, no account of its own, no envelope
    async with acme(bare, faults="429=1", seed=3) as (client, _state):
        limited = await client.post("/acme/v1/jobs", json={"prompt": "x"}, headers=AUTH)
        assert (limited.status_code, limited.text) == (429, "Too many requests, please slow down.")
    async with acme(bare, latency=0) as (client, state):
        await client.post("/acme/v1/jobs", json={"prompt": "x", "n": 3}, headers=AUTH)
        assert type(state.part(ACME)) is ProviderState
        [task] = state.tasks.values()
        assert task.cost_usd == 0.75
        assert re.fullmatch(r"[0-9a-f]{32}", task.id)
        stats = (await client.get("/__stats")).json()
        assert (stats["billed_usd"], stats["balances"]) == (0.75, {})


async def test_credentials_come_from_the_config_else_the_environment_else_the_demo(
        monkeypatch: pytest.MonkeyPatch) -> None:
    async with acme(credentials={KEY_VAR: "given"}) as (_client, state):
        assert state.part(ACME).credentials == {KEY_VAR: "given"}
    monkeypatch.setenv(KEY_VAR, "from-env")
    async with acme() as (_client, state):
        assert state.part(ACME).credentials == {KEY_VAR: "from-env"}
    monkeypatch.delenv(KEY_VAR)
    async with acme() as (client, state):
        assert state.part(ACME).credentials == {KEY_VAR: DEMO_KEY}
        assert "demo-acme" not in json.dumps((await client.get("/__")).json())


@pytest.mark.parametrize(("options", "words"), [
    ({ACME: {"nope": 1}}, "the acme emulator has no option 'nope' (its options: acme.balance)"),
    ({ACME: {"balance": "lots"}}, "acme.balance must be a number, not 'lots'"),
    ({ACME: {"balance": True}}, "acme.balance must be a number"),
    ({"elsewhere": {"balance": 1}}, "no emulated provider 'elsewhere'"),
])
def test_options_a_provider_does_not_declare_are_refused(options: dict[str, Any],
                                                         words: str) -> None:
    with pytest.raises(ValueError, match=re.escape(words)):
        create_app(EmulatorConfig(options=options), registry=only(FULL))


async def test_options_are_typed_like_their_defaults() -> None:
    async with acme(options={ACME: {"balance": "2.5"}}) as (_client, state):
        assert state.part(ACME).options == {"balance": 2.5}
    cfg = EmulatorConfig(options={ACME: {"balance": 1}}).with_options({ACME: {"balance": 3}})
    assert cfg.options == {ACME: {"balance": 3}}
    async with acme(options=cfg.options) as (_client, state):
        assert state.part(ACME).options == {"balance": 3.0}


def test_it_is_served_over_a_socket_like_the_built_ins() -> None:
    with serve_in_thread(EmulatorConfig(latency=0), registry=only(FULL)) as server:
        base = server.acme_base_url
        assert base == f"{server.url}/acme/v1"
        created = httpx.post(f"{base}/jobs", json={"prompt": "over a socket"}, headers=AUTH)
        assert httpx.get(f"{base}/jobs/{created.json()['id']}").json()["status"] == "succeeded"
        assert server.stats()["tasks_created_total"] == 1
        with pytest.raises(ConfigError, match="not served by this emulator"):
            server.base_url("wiro")
        with pytest.raises(ConfigError, match="no installed provider 'nowhere'"):
            server.base_url("nowhere")
