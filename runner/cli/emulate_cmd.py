"""``seedbatch emulate``: serve the emulator of every installed provider that ships one."""

from __future__ import annotations

import os
from collections.abc import Mapping

import click

from runner.cli import handles_errors, main
from runner.config import demo_credentials, is_loopback
from runner.errors import ConfigError
from runner.plugins import registry


def credential_lines(env: Mapping[str, str]) -> list[str]:
    """Where each accepted credential comes from. Values from the environment are never
    shown; the demo values are public and shown so they can be copied."""
    lines = []
    for var, demo in demo_credentials().items():
        if env.get(var):
            lines.append(f"  {var:<16} from the environment (value not shown)")
        else:
            lines.append(f"  export {var}={demo}   # demo value")
    return lines


def endpoint_lines(url: str) -> list[str]:
    """Each emulated provider's base URL, and the variable that points seedbatch at it."""
    specs = [s for s in sorted(registry().providers.values(), key=lambda s: s.name)
             if s.emulator is not None]
    return ([f"  {s.title:<9}{url}{s.emulator.path}" for s in specs if s.emulator]
            + [f"  stats    {url}/__stats", "Point clients at it:"]
            + [f"  export {s.base_url_var}={url}{s.emulator.path}" for s in specs
               if s.emulator])


def option_lines(options: Mapping[str, Mapping[str, object]]) -> list[str]:
    """Each emulated provider's options (``--set``) as they are set, one line a provider."""
    lines = [f"  {name:<9}" + ", ".join(f"{option}={value}" for option, value in values.items())
             for name, values in sorted(options.items()) if values]
    return lines or ["  none"]


def settings_of(values: tuple[str, ...], credits: int | None) -> dict[str, dict[str, str]]:
    """``--set PROVIDER.OPTION=VALUE`` (and the alias ``--credits N``: the ``credits`` option
    of every provider that has one, before ``--set``) as ``EmulatorConfig.options``; each
    checked against the options the provider declares."""
    from runner.emulator.config import check_options, parse_setting

    specs = {name: spec for name, spec in registry().providers.items() if spec.emulator}
    options: dict[str, dict[str, str]] = {}
    if credits is not None:
        for name, spec in specs.items():
            if spec.emulator is not None and "credits" in spec.emulator.options:
                options.setdefault(name, {})["credits"] = str(credits)
    try:
        for text in values:
            provider, option, value = parse_setting(text)
            options.setdefault(provider, {})[option] = value
        check_options(options, specs)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="'--set'") from None
    return options


def _faults(ctx: click.Context, param: click.Parameter, value: str | None) -> object:
    from runner.emulator.faults import FaultSpec

    try:
        return FaultSpec.parse(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


@main.command(context_settings={"max_content_width": 100})
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Interface to listen on. Keep it loopback: the emulator has no real security.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535),
              help="Port to listen on; 0 picks a free one.")
@click.option("--latency", default=2.0, show_default=True, type=click.FloatRange(min=0),
              help="Seconds from submit to a finished task.")
@click.option("--jitter", default=0.0, show_default=True, type=click.FloatRange(0, 1),
              help="Random ± fraction of --latency per task.")
@click.option("--faults", "faults", default=None, callback=_faults, metavar="SPEC",
              help="Fault rates per request, e.g. "
                   "'429=0.1,5xx=0.05,drop=0.02,slow=0.05,fail=0.1,truncate=0.05,slow_seconds=3'.")
@click.option("--concurrency", default=8, show_default=True, type=click.IntRange(min=1),
              help="Unfinished tasks allowed per account (beyond it a submit is refused).")
@click.option("--image-size", type=click.Choice(["small", "full"]), default="small",
              show_default=True,
              help="'small': outputs ~256 px on the long side; 'full': the requested size.")
@click.option("--pad-bytes", default=0, show_default=True, type=click.IntRange(min=0),
              help="Pad every output PNG to at least this many bytes (download benchmarks).")
@click.option("--render-ahead/--no-render-ahead", default=True, show_default=True,
              help="Render each output halfway through its task, as a host does while its "
                   "task runs, rather than at its first download.")
@click.option("--set", "settings", multiple=True, metavar="PROVIDER.OPTION=VALUE",
              help="Set one of a provider's emulator options (repeatable). The banner and "
                   "docs/emulator.md list each provider's options and their defaults.")
@click.option("--credits", "credits", default=None, type=click.IntRange(min=0),
              help="Starting balance of the accounts billed in credits: the same as --set "
                   "PROVIDER.credits=N for each provider with that option.")
@click.option("--seed", default=None, type=int, help="Seed for fault and jitter draws.")
@handles_errors
def emulate(host: str, port: int, latency: float, jitter: float, faults: object,
            concurrency: int, image_size: str, pad_bytes: int, render_ahead: bool,
            settings: tuple[str, ...], credits: int | None, seed: int | None) -> None:
    """Serve the emulator (offline, free) of every installed provider until Ctrl-C.

    It speaks each host's API as its pages document it, renders real PNGs showing the
    prompt, bills list prices, and can inject faults. Counters live at /__stats. The lines
    it prints say where each provider's API is and which variables point seedbatch at it;
    docs/emulator.md has curl recipes for each vendor.

    \b
    Examples:
      seedbatch emulate --port 8000 --latency 1 &
      seedbatch emulate --port 0 --faults '429=0.1,fail=0.05' --seed 7
      seedbatch emulate --set PROVIDER.OPTION=VALUE --set …
    """
    from runner.emulator import EmulatorConfig
    from runner.emulator.app import create_app
    from runner.emulator.faults import FaultSpec
    from runner.emulator.server import bind_socket, make_server, url_for

    assert isinstance(faults, FaultSpec)
    options = settings_of(settings, credits)
    config = EmulatorConfig.from_env(
        latency=latency, jitter=jitter, faults=faults, concurrency=concurrency,
        image_size=image_size, output_pad_bytes=pad_bytes, render_ahead=render_ahead,
        seed=seed, options=options,
    )
    try:
        app = create_app(config)
    except ValueError as exc:  # an option's value its provider refuses (a negative balance)
        raise click.BadParameter(str(exc), param_hint="'--set'") from None
    if not is_loopback(host):
        click.echo(f"warning: listening on {host}, not a loopback address: anyone who can "
                   f"reach this machine can use the emulator and read its files", err=True)
    try:
        sock = bind_socket(host, port)
    except OSError as exc:
        raise ConfigError(f"cannot listen on {host}:{port} ({exc.strerror or exc}); pick "
                          f"another --port, or --port 0 for a free one") from None
    url = url_for(host, sock.getsockname()[1])
    lines = [
        f"seedbatch emulator listening on {url}",
        *endpoint_lines(url),
        "Credentials it accepts:",
        *credential_lines(os.environ),
        "Provider options (--set PROVIDER.OPTION=VALUE):",
        *option_lines(app.state.emulator.describe()["options"]),
        f"latency {latency:g} s, jitter {jitter:g}, concurrency {concurrency}, "
        f"faults {faults}, images {image_size}"
        + (f", padded to {pad_bytes} bytes" if pad_bytes else ""),
        "Press Ctrl-C to stop.",
    ]
    click.echo("\n".join(lines))
    server = make_server(app, log_level="info", access_log=True)
    try:
        server.run(sockets=[sock])
    except KeyboardInterrupt:  # uvicorn re-raises the Ctrl-C it handled: stopping is the goal
        pass
    finally:
        sock.close()
    click.echo("emulator stopped")
