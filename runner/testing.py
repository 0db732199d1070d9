"""Test helpers for provider plugins (and seedbatch's own tests of its hosts).

* :func:`serve_emulator` — the emulator on a loopback socket, in a background thread
  (a context manager yielding an :class:`~runner.emulator.EmulatorServer`);
* :func:`emulator_transport` — the emulator in process, as an ``httpx.ASGITransport`` for a
  client whose base URL starts with :data:`EMULATOR_URL`;
* :func:`emulator_settings` — a provider's settings against an emulator, credentials as
  ``--emulate`` resolves them (the environment's, else the emulator's demo ones);
* :class:`ManualClock` — an emulator clock that stands still until moved, so a test decides
  when tasks end instead of waiting for them;
* :func:`check_provider_contract` — the contract every provider's client and emulator meet,
  checked against the emulator (see its docstring). A plugin's tests call it with their
  ``ProviderSpec``; seedbatch's own tests call it for its built-in hosts::

      import asyncio
      from runner.testing import check_provider_contract
      from seedbatch_acme import SPEC

      def test_acme_meets_the_provider_contract() -> None:
          result = asyncio.run(check_provider_contract(SPEC))
          assert result.outputs >= 1

Every helper works with the providers installed (and loaded: ``SEEDBATCH_PLUGINS``), as the
emulator serves exactly those. docs/plugins.md tells the whole story.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

import httpx

from runner.config import ProviderSettings, resolve
from runner.emulator import EmulatorConfig, EmulatorServer, create_app, serve_in_thread
from runner.errors import AuthError, CancelUnsupported, ConfigError, JobRejected, ProviderError
from runner.jobs import Job
from runner.media import sniff_image
from runner.plugins import registry
from runner.providers.base import Provider, TaskState, TaskStatus
from runner.spec import ModelSpec, ProviderSpec

__all__ = [
    "EMULATOR_URL",
    "ContractFailure",
    "ContractResult",
    "ManualClock",
    "check_models",
    "check_provider_contract",
    "emulator_settings",
    "emulator_transport",
    "serve_emulator",
]

#: The emulator's root when it is reached through :func:`emulator_transport` (nothing
#: listens there: the transport answers). A loopback address, so plain http is accepted.
EMULATOR_URL = "http://127.0.0.1:9"
#: Polls allowed for a task to show its end once the clock is past its latency.
POLLS_AFTER_END = 5
CONTRACT_PROMPT = "a contract test pattern: teal and amber chevrons"


class ManualClock:
    """An emulator clock (unix seconds) that moves only when told: ``clock.advance(5)``.

    Pass it as ``clock=`` to :func:`serve_emulator` or :func:`emulator_transport`. It starts
    at the current time (some hosts' signatures carry timestamps) and then stands still."""

    def __init__(self, start: float | None = None) -> None:
        import time

        self.now = time.time() if start is None else float(start)

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def _require(providers: Iterable[str] | None) -> None:
    """Each named provider is installed, loaded and ships an emulator; else a ConfigError
    that says why (not installed, left out by SEEDBATCH_PLUGINS, no emulator)."""
    for name in providers or ():
        spec = registry().provider(name)  # ConfigError naming the package to install
        if spec.emulator is None:
            raise ConfigError(f"provider {name!r} ships no emulator (its ProviderSpec has no "
                              f"EmulatorSpec)")


def serve_emulator(config: EmulatorConfig | None = None,
                   providers: Iterable[str] | None = None, *,
                   clock: ManualClock | None = None,
                   host: str = "127.0.0.1") -> contextlib.AbstractContextManager[EmulatorServer]:
    """The emulator of every installed provider on ``host`` (a free port), in a thread.

    ``providers`` names those the caller relies on: each must be installed, loaded and ship
    an emulator, or a :class:`~runner.errors.ConfigError` says why before anything starts.
    ``server.base_url(name)`` is where a provider's emulated API is; ``server.app`` the
    Starlette application; ``server.stats()`` the counters."""
    _require(providers)
    return serve_in_thread(config or EmulatorConfig(), host, clock=clock)


def emulator_transport(config: EmulatorConfig | None = None,
                       providers: Iterable[str] | None = None, *,
                       clock: ManualClock | None = None) -> httpx.ASGITransport:
    """The emulator in process: pass it as ``transport=`` to a client whose base URL is
    :data:`EMULATOR_URL` + the provider's ``EmulatorSpec.path`` (:func:`emulator_settings`
    builds those settings). ``providers`` as for :func:`serve_emulator`; the application is
    ``transport.app``."""
    _require(providers)
    return httpx.ASGITransport(app=create_app(config or EmulatorConfig(), clock=clock))


def emulator_settings(name: str, root: str = EMULATOR_URL,
                      env: Mapping[str, str] | None = None) -> ProviderSettings:
    """Provider ``name``'s settings against an emulator at ``root`` (a server's ``url``, or
    :data:`EMULATOR_URL` with :func:`emulator_transport`): its base URL is ``root`` + its
    ``EmulatorSpec.path``; credentials come from ``env`` (default: the process environment),
    else the emulator's demo ones — exactly what ``--emulate`` sends."""
    _require([name])
    part = registry().provider(name).emulator
    assert part is not None
    return resolve(name, None, os.environ if env is None else env, demo=True,
                   base_url=root.rstrip("/") + part.path)


# -- the contract ------------------------------------------------------------------------------

class ContractFailure(AssertionError):
    """A provider broke the contract: which provider, which step, what happened."""


@dataclass(frozen=True)
class ContractResult:
    """What :func:`check_provider_contract` saw, for further assertions."""

    provider: str
    model: str
    task_id: str
    outputs: int  # output images of the finished task
    output_bytes: tuple[int, ...]  # the size of each, as streamed
    polls: int  # polls of that task until it showed its end
    cancel: str  # "cancelled" (can_cancel) or "runs on" (CancelUnsupported)
    models_checked: tuple[str, ...]


def _fail(provider: str, step: str, message: str) -> ContractFailure:
    return ContractFailure(f"provider {provider!r} breaks the contract — {step}: {message}")


def check_models(spec: ProviderSpec) -> tuple[str, ...]:
    """Every model belongs to ``spec`` and its schema's defaults are valid parameters
    (``check(with_defaults({}), 0) == []``); returns the model ids, else ContractFailure."""
    if not spec.models:
        raise _fail(spec.name, "models", "the provider declares no model")
    for model in spec.models:
        if model.provider != spec.name or not model.id.startswith(spec.name + "/"):
            raise _fail(spec.name, "models", f"{model.id!r} must be named '{spec.name}/…' and "
                        f"belong to provider {spec.name!r}")
        try:
            problems = model.check(model.with_defaults({}), 0)
        except Exception as exc:  # a schema that cannot be read or compiled
            raise _fail(spec.name, "models", f"{model.id}: its schema cannot be used: "
                        f"{type(exc).__name__}: {exc}") from exc
        if problems:
            shown = "; ".join(f"{where}: {msg}" for where, msg in problems)
            raise _fail(spec.name, "models", f"{model.id}: its defaults are not valid "
                        f"parameters ({shown})")
    return tuple(m.id for m in spec.models)


def _contract_job(model: ModelSpec, params: Mapping[str, Any], prompt: str, n: int) -> Job:
    return Job(key=f"{n:064x}", name=f"contract-{n}", alias="contract", model=model.id,
               provider=model.provider, prompt=prompt, params=dict(params))


def _is_whole_png(data: bytes) -> bool:
    if sniff_image(data[:16]) != ("image/png", "png") or data[-8:-4] != b"IEND":
        return False
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as image:
            image.verify()
    except Exception:
        return False
    return True


Reached = tuple[str, httpx.AsyncBaseTransport | None]  # (emulator root, transport or None)


@contextlib.asynccontextmanager
async def _emulator(config: EmulatorConfig, clock: ManualClock,
                    over_socket: bool) -> AsyncIterator[Reached]:
    if over_socket:
        with serve_in_thread(config, clock=clock) as server:
            yield server.url, None
    else:
        yield EMULATOR_URL, httpx.ASGITransport(app=create_app(config, clock=clock))


async def check_provider_contract(
    spec: ProviderSpec,
    *,
    model: str | None = None,
    params: Mapping[str, Any] | None = None,
    prompt: str = CONTRACT_PROMPT,
    config: EmulatorConfig | None = None,
    over_socket: bool = False,
    env: Mapping[str, str] | None = None,
    unknown_task_id: str = "999999999",
) -> ContractResult:
    """Check ``spec``'s client against ``spec``'s emulator; ContractFailure on any breach.

    ``spec`` must be installed and loaded under its name (the emulator serves the installed
    providers). Against a fresh emulator (``config``, default latency 2 s; in process, or
    over a loopback socket with ``over_socket``) whose clock stands still until moved:

    1. the models: each belongs to the provider, its defaults are valid parameters;
    2. the client is a :class:`~runner.providers.base.Provider` named ``spec.name``;
    3. ``submit`` of a job of ``model`` (default: the first) with ``params`` gives a task id;
    4. ``poll`` while no time passes shows the task queued or running — the emulator follows
       its clock (``state.now()``) and its latency;
    5. once the clock is past the latency, a few polls show it succeeded with 1 to
       ``images_per_job`` outputs;
    6. ``stream`` of each output gives a whole PNG (of the listed size, when one is listed);
    7. ``cancel`` of the ended task does nothing and raises nothing;
    8. ``poll`` of ``unknown_task_id`` raises JobRejected;
    9. ``cancel`` of a second, queued task: with ``spec.can_cancel`` it returns and the task
       then shows cancelled, and stays so once its time is up; without, it raises
       CancelUnsupported and the task runs on to success;
    10. with every credential wrong, ``submit`` and ``poll`` raise AuthError.
    """
    name = spec.name
    models_checked = check_models(spec)
    try:
        _require([name])
    except ConfigError as exc:
        raise _fail(name, "installed", f"{exc} (the emulator serves installed, loaded "
                    f"providers only)") from None
    if spec.emulator is None:
        raise _fail(name, "emulator", "the ProviderSpec has no EmulatorSpec")
    chosen = next((m for m in spec.models if m.id == model), None) if model else spec.models[0]
    if chosen is None:
        raise _fail(name, "models", f"no model {model!r} (it has: {', '.join(models_checked)})")
    final = chosen.with_defaults(params or {})  # what a job carries: defaults made explicit
    problems = chosen.check(final, 0)
    if problems:
        raise ValueError(f"params {dict(params or {})!r} are not valid for {chosen.id}: "
                         f"{problems}")
    cfg = config or EmulatorConfig(latency=2.0, seed=0)
    if cfg.latency <= 0:
        raise ValueError("the contract needs an emulator latency above 0 (tasks that end at "
                         "once cannot show they are in flight)")
    clock = ManualClock()
    async with _emulator(cfg, clock, over_socket) as (root, transport):
        settings = emulator_settings(name, root, env)
        client = spec.make_client(settings, transport=transport)
        try:
            return await _run_contract(spec, client, settings, transport, clock, cfg, chosen,
                                       final, prompt, unknown_task_id, models_checked)
        finally:
            await client.aclose()


async def _check_unknown_poll(name: str, client: Provider, unknown_task_id: str) -> None:
    """Step 8: polling an id the host never gave raises JobRejected."""
    try:
        await client.poll(unknown_task_id)
    except JobRejected:
        return
    except ProviderError as exc:
        raise _fail(name, "poll (unknown id)", f"{type(exc).__name__}, not JobRejected: "
                    f"{exc}") from exc
    raise _fail(name, "poll (unknown id)", f"task {unknown_task_id!r} was reported, not "
                f"refused with JobRejected")


def _wrong_client(spec: ProviderSpec, settings: ProviderSettings,
                  transport: httpx.AsyncBaseTransport | None) -> Provider:
    """Step 10's client: every credential wrong."""
    wrong = replace(settings, api_key=f"wrong-{settings.api_key}",
                    api_secret=f"wrong-{settings.api_secret}" if settings.api_secret else "")
    return spec.make_client(wrong, transport=transport)


async def _stream_outputs(name: str, client: Provider, status: TaskStatus) -> list[int]:
    """Step 6: every output streams as a whole PNG (of the listed size, if one is listed)."""
    sizes = []
    for output in status.outputs:
        try:
            async with client.stream(output.url) as response:
                data = b"".join([chunk async for chunk in response.aiter_bytes()])
        except ProviderError as exc:
            raise _fail(name, "stream", f"{output.url}: {type(exc).__name__}: {exc}") from exc
        if not _is_whole_png(data):
            raise _fail(name, "stream", f"{output.url}: {len(data)} bytes that are not a whole "
                        f"PNG (starting {data[:8]!r})")
        if output.size is not None and output.size != len(data):
            raise _fail(name, "stream", f"{output.url}: {len(data)} bytes, {output.size} listed")
        sizes.append(len(data))
    return sizes


async def _run_contract(spec: ProviderSpec, client: Provider, settings: ProviderSettings,
                        transport: httpx.AsyncBaseTransport | None, clock: ManualClock,
                        cfg: EmulatorConfig, model: ModelSpec, params: Mapping[str, Any],
                        prompt: str, unknown_task_id: str,
                        models_checked: tuple[str, ...]) -> ContractResult:
    name = spec.name
    if not isinstance(client, Provider):
        raise _fail(name, "client", f"{type(client).__name__} lacks part of the Provider "
                    f"protocol (name, submit, poll, cancel, stream, aclose)")
    if client.name != name:
        raise _fail(name, "client", f"its name is {client.name!r}, not {name!r}")
    if spec.synchronous:
        return await _run_synchronous_contract(spec, client, settings, transport, clock, cfg,
                                               model, params, prompt, unknown_task_id,
                                               models_checked)

    async def call(step: str, coro: Awaitable[Any]) -> Any:
        try:
            return await coro
        except ProviderError as exc:
            raise _fail(name, step, f"{type(exc).__name__}: {exc}") from exc

    # 3-5: a task's whole life, the clock moved by hand
    submitted = await call("submit", client.submit(_contract_job(model, params, prompt, 1)))
    if not isinstance(submitted.task_id, str) or not submitted.task_id:
        raise _fail(name, "submit", f"no task id in {submitted!r}")
    task_id = submitted.task_id
    early: TaskStatus = await call("poll", client.poll(task_id))
    if early.state not in (TaskState.QUEUED, TaskState.RUNNING):
        raise _fail(name, "poll", f"with no time passed since submit the task is "
                    f"{early.state} ({early.provider_status!r}), not queued or running: the "
                    f"emulator must follow state.now() and state.config.latency")
    clock.advance(cfg.latency * (1 + cfg.jitter) + 1)
    status, polls = early, 1
    while not status.state.terminal and polls <= POLLS_AFTER_END:
        status = await call("poll", client.poll(task_id))
        polls += 1
    if status.state is not TaskState.SUCCEEDED:
        raise _fail(name, "poll", f"past its latency the task is {status.state} "
                    f"({status.provider_status!r}, error {status.error!r}), not succeeded")
    most = model.images_per_job(params)
    if not 1 <= len(status.outputs) <= most:
        raise _fail(name, "poll", f"{len(status.outputs)} outputs listed; 1 to {most} expected")

    # 6: every output, streamed
    sizes = await _stream_outputs(name, client, status)
    # 7: nothing to cancel once a task has ended
    await call("cancel (ended task)", client.cancel(task_id, status.state))

    # 8: an id the host never gave
    await _check_unknown_poll(name, client, unknown_task_id)

    # 9: cancel, as spec.can_cancel promises
    second = await call("submit", client.submit(_contract_job(model, params, prompt + " (2)", 2)))
    before: TaskStatus = await call("poll", client.poll(second.task_id))
    if before.state.terminal:
        raise _fail(name, "poll", f"a task submitted with no time passed is {before.state}")
    try:
        await client.cancel(second.task_id, before.state)
    except CancelUnsupported as exc:
        if spec.can_cancel:
            raise _fail(name, "cancel", f"can_cancel is True but cancel raised "
                        f"CancelUnsupported: {exc}") from exc
        outcome = "runs on"
    except ProviderError as exc:
        raise _fail(name, "cancel", f"{type(exc).__name__}: {exc}") from exc
    else:
        if not spec.can_cancel:
            raise _fail(name, "cancel", "can_cancel is False but cancel returned as if the task "
                        "had been stopped; it must raise CancelUnsupported")
        outcome = "cancelled"
    now: TaskStatus = await call("poll", client.poll(second.task_id))
    expected = TaskState.CANCELLED if outcome == "cancelled" else before.state
    if now.state is not expected:
        raise _fail(name, "cancel", f"right after cancel ({outcome}) the task is {now.state}, "
                    f"not {expected}")
    clock.advance(cfg.latency * (1 + cfg.jitter) + 1)
    after: TaskStatus = await call("poll", client.poll(second.task_id))
    expected = TaskState.CANCELLED if outcome == "cancelled" else TaskState.SUCCEEDED
    if after.state is not expected:
        raise _fail(name, "cancel", f"after cancel ({outcome}) and its latency the task is "
                    f"{after.state}, not {expected}")

    # 10: wrong credentials
    bad = _wrong_client(spec, settings, transport)
    try:
        attempts: tuple[tuple[str, Callable[[], Awaitable[Any]]], ...] = (
            ("submit", lambda: bad.submit(_contract_job(model, params, prompt, 3))),
            ("poll", lambda: bad.poll(task_id)))
        for step, attempt in attempts:
            try:
                await attempt()
            except AuthError:
                continue
            except ProviderError as exc:
                raise _fail(name, f"{step} (wrong credentials)", f"{type(exc).__name__}, not "
                            f"AuthError: {exc}") from exc
            raise _fail(name, f"{step} (wrong credentials)", "it succeeded")
    finally:
        await bad.aclose()

    return ContractResult(provider=name, model=model.id, task_id=task_id,
                          outputs=len(status.outputs), output_bytes=tuple(sizes), polls=polls,
                          cancel=outcome, models_checked=models_checked)



async def _run_synchronous_contract(
        spec: ProviderSpec, client: Provider, settings: ProviderSettings,
        transport: httpx.AsyncBaseTransport | None, clock: ManualClock, cfg: EmulatorConfig,
        model: ModelSpec, params: Mapping[str, Any], prompt: str, unknown_task_id: str,
        models_checked: tuple[str, ...]) -> ContractResult:
    """The contract of a host whose submit holds the call until the task ends
    (``spec.synchronous``): the answer is the finished task (``SubmitResult.final``).

    3. a submit is still in flight while no time passes (the emulator holds the call by its
       clock), and once the clock is past the latency it answers with a task id and its
       final status: succeeded, with 1 to ``images_per_job`` outputs;
    4-8. as for every host: outputs stream as whole PNGs, cancel of the ended task does
       nothing, poll of ``unknown_task_id`` raises JobRejected;
    9. nothing can be cancelled while the call is in flight (there is no task id yet):
       ``can_cancel`` must be False, ``cancel`` raises CancelUnsupported and the call runs
       on to its answer;
    10. with every credential wrong, ``submit`` raises AuthError."""
    name = spec.name
    if spec.can_cancel:
        raise _fail(name, "cancel", "a synchronous host has no task to stop while its call is "
                    "in flight: can_cancel must be False")
    latency = cfg.latency * (1 + cfg.jitter) + 1

    async def held(job: Job, step: str) -> TaskStatus:
        call = asyncio.ensure_future(client.submit(job))
        await asyncio.sleep(0.05)  # the clock stands still: the call cannot have ended
        if call.done():
            exc = call.exception()
            raise _fail(name, step, f"with no time passed the call already ended "
                        f"({exc!r}); the emulator must hold it until state.now() is past "
                        f"its latency" if exc else "with no time passed the call already "
                        "answered; the emulator must hold it by its clock")
        if step == "cancel (call in flight)":
            try:
                await client.cancel(f"{job.key}-in-flight", TaskState.RUNNING)
            except CancelUnsupported:
                pass
            except ProviderError as exc:
                call.cancel()
                raise _fail(name, step, f"{type(exc).__name__}, not CancelUnsupported: "
                            f"{exc}") from exc
            else:
                call.cancel()
                raise _fail(name, step, "cancel returned as if the call had been stopped; it "
                            "must raise CancelUnsupported")
        clock.advance(latency)
        try:
            result = await asyncio.wait_for(call, 60)  # a hang guard only
        except ProviderError as exc:
            raise _fail(name, step, f"{type(exc).__name__}: {exc}") from exc
        if not isinstance(result.task_id, str) or not result.task_id or result.final is None:
            raise _fail(name, step, f"no task id, or no final status, in {result!r}")
        return result.final

    # 3: the call's whole life, the clock moved by hand
    status = await held(_contract_job(model, params, prompt, 1), "submit")
    if status.state is not TaskState.SUCCEEDED:
        raise _fail(name, "submit", f"past its latency the call answered {status.state} "
                    f"({status.provider_status!r}, error {status.error!r}), not succeeded")
    most = model.images_per_job(params)
    if not 1 <= len(status.outputs) <= most:
        raise _fail(name, "submit", f"{len(status.outputs)} outputs listed; 1 to {most} "
                    f"expected")
    sizes = await _stream_outputs(name, client, status)
    try:
        await client.cancel(status.task_id, status.state)
    except ProviderError as exc:
        raise _fail(name, "cancel (ended task)", f"{type(exc).__name__}: {exc}") from exc
    await _check_unknown_poll(name, client, unknown_task_id)
    after = await held(_contract_job(model, params, prompt + " (2)", 2),
                       "cancel (call in flight)")
    if after.state is not TaskState.SUCCEEDED:
        raise _fail(name, "cancel", f"after cancel (runs on) the call answered {after.state}, "
                    f"not succeeded")
    bad = _wrong_client(spec, settings, transport)
    try:
        await bad.submit(_contract_job(model, params, prompt, 3))
    except AuthError:
        pass
    except ProviderError as exc:
        raise _fail(name, "submit (wrong credentials)", f"{type(exc).__name__}, not "
                    f"AuthError: {exc}") from exc
    else:
        raise _fail(name, "submit (wrong credentials)", "it succeeded")
    finally:
        await bad.aclose()
    return ContractResult(provider=name, model=model.id, task_id=status.task_id,
                          outputs=len(status.outputs), output_bytes=tuple(sizes), polls=0,
                          cancel="runs on", models_checked=models_checked)
