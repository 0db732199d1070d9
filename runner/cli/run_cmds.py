"""``seedbatch run``, ``resume``, ``status`` and ``cancel``."""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

import click

from runner.cli import fail, handles_errors, main
from runner.display import spend
from runner.errors import EXIT_INPUT
from runner.rundir import REPORT_HTML


def _faults_option(value: str | None) -> str | None:
    if value is None:
        return None
    from runner.emulator.faults import FaultSpec

    try:
        FaultSpec.parse(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--emulate-faults") from None
    return value


def plan_summary(prepared: object) -> str:
    from runner.api import Prepared

    assert isinstance(prepared, Prepared)
    plan = prepared.plan
    lines = []
    total = len(plan.jobs)
    head = f"{plan.name}: {total} job{'s' if total != 1 else ''}"
    if prepared.skipped:
        head += f", {len(prepared.selected)} selected by --only {prepared.only}"
    if prepared.reused:
        n = len(prepared.reused)
        stored = prepared.from_store
        head += (f"; {n} already made by an earlier run"
                 + (f" ({stored} from store)" if stored else "")
                 + f" (reused, not submitted; --force submits {'them' if n != 1 else 'it'} "
                   f"again)")
    lines.append(head)
    if prepared.store is not None:
        lines.append(f"Store: {prepared.store.url}")
    lines += [f"note: {note}" for note in prepared.store_notes]
    width = max((len(p) for p in prepared.providers), default=8)
    for provider in prepared.providers:
        jobs = [j for j in prepared.to_run if j.provider == provider]
        models = Counter(j.model for j in jobs)
        usd = sum(j.estimate.usd for j in jobs)
        credits = sum(j.estimate.credits for j in jobs)
        lim = prepared.limits[provider]
        rate = f", {lim.requests_per_minute:g} req/min" if lim.requests_per_minute else ""
        lines.append(f"  {provider:<{width}} {len(jobs):>4} job{'s' if len(jobs) != 1 else ' '}  "
                     + ", ".join(f"{m} ×{n}" for m, n in sorted(models.items()))
                     + f"  {spend(usd, credits, approx=True)}"
                     + f"  (≤ {lim.concurrency} in flight{rate})")
    est = prepared.estimate
    budget = prepared.budget
    caps = []
    if budget.max_usd is not None:
        caps.append(f"${budget.max_usd:.2f}")
    if budget.max_credits is not None:
        caps.append(f"{budget.max_credits:g} credits")
    lines.append(f"Estimated: {est.images} image{'s' if est.images != 1 else ''}, "
                 f"{spend(est.usd, est.credits, approx=True)}"
                 + (f" (budget: at most {' and '.join(caps)})" if caps else ""))
    if prepared.emulate:
        lines.append("Emulated: the built-in emulator answers; nothing is spent.")
    return "\n".join(lines)


def result_summary(result: object) -> str:
    from runner.api import RunResult

    assert isinstance(result, RunResult)
    c = result.counts
    total = sum(c.values())
    parts = [f"succeeded {result.succeeded}", f"failed {result.failed}",
             f"pending {result.pending}", f"unknown {result.unknown}"]
    if result.cancelled:
        parts.append(f"cancelled {result.cancelled}")
    tail = f" (of {total}"
    tail += f"; {result.skipped} skipped)" if result.skipped else ")"
    if c.get("reused"):
        tail += f"; {c['reused']} reused from earlier runs"
        if result.from_store:
            tail += f" ({result.from_store} from store)"
    est = result.estimate
    lines = [
        ", ".join(parts) + tail,
        f"images: {result.images}",
        f"spent: {spend(result.spent_usd, result.spent_credits)} "
        f"(estimated {spend(est.usd, est.credits)})",
        f"run dir: {result.run_dir}",
    ]
    if result.report is not None:
        html = Path(result.report).with_name(REPORT_HTML)
        lines.append(f"report: {html if html.exists() else result.report}")
    store = result.store
    if store and store.get("jobs_stored") and not store.get("jobs_not_stored"):
        lines.append(f"store: {store.get('url')} ({store.get('jobs_stored', 0)} "
                     f"job{'s' if store.get('jobs_stored', 0) != 1 else ''} stored)")
    lines += [f"note: {m}" for m in result.messages]
    return "\n".join(lines)


def _echo_result(result: object, quiet: bool) -> None:
    click.echo(result_summary(result))


@main.command(context_settings={"max_content_width": 100})
@click.argument("manifest", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--emulate", is_flag=True,
              help="Run against the built-in emulator (in-process, offline, free).")
@click.option("--emulate-latency", type=click.FloatRange(min=0), default=1.0,
              show_default=True, help="Seconds each emulated task takes.")
@click.option("--emulate-faults", metavar="SPEC", default=None,
              help="Faults the emulator injects, e.g. '429=0.1,5xx=0.05,fail=0.1'.")
@click.option("--runs-dir", type=click.Path(file_okay=False, path_type=Path),
              default=Path("runs"), show_default=True,
              help="Where the new run directory is created.")
@click.option("--yes", "-y", is_flag=True, help="Spend without asking.")
@click.option("--max-usd", type=float, default=None,
              help="Spend at most this many USD (the lower of this and the manifest's budget).")
@click.option("--concurrency", type=click.IntRange(min=1), default=None,
              help="At most N tasks in flight per provider (caps the manifest's limits).")
@click.option("--only", "only", metavar="PATTERN", default=None,
              help="Run only the jobs whose name matches this glob (e.g. 'tent-*').")
@click.option("--force", is_flag=True,
              help="Submit every job again, even those with outputs from an earlier run.")
@click.option("--quiet", "-q", is_flag=True, help="Print only the final summary.")
@click.option("--store", "store", metavar="URL", default=None,
              help="The shared output store: a path or an fsspec URL (s3://…, gs://…, "
                   "az://…). Wins over SEEDBATCH_STORE and the manifest's store:.")
@handles_errors
def run(manifest: Path, emulate: bool, emulate_latency: float, emulate_faults: str | None,
        runs_dir: Path, yes: bool, max_usd: float | None, concurrency: int | None,
        only: str | None, force: bool, quiet: bool, store: str | None) -> None:
    """Run MANIFEST: submit every job, follow it, download its outputs, record it all.

    Creates one new directory under --runs-dir holding manifest.yaml, plan.json,
    journal.sqlite and outputs/. Ctrl-C once: no new submits, tasks in flight finish.
    Twice: remote tasks are cancelled. `seedbatch resume RUN_DIR` picks up after any stop.
    Jobs whose verified outputs an earlier run under --runs-dir holds are reused for free
    (see `seedbatch plan`); --force submits them again. With a shared store (--store,
    SEEDBATCH_STORE or the manifest's store:) the jobs it holds are placed from it for $0
    ("from store") and every output made for real is uploaded to it in the background; a
    store failure never fails a job (`seedbatch push RUN_DIR` finishes the uploads).

    \b
    Examples:
      seedbatch run manifests/quickstart.yaml --emulate --yes     # offline, free
      seedbatch run hero.yaml --max-usd 5 --concurrency 4          # asks before spending
      seedbatch run hero.yaml --only 'tent-*' --yes --quiet        # a subset, no prompt
      seedbatch run hero.yaml --store s3://team-bucket/seedbatch --yes  # share the outputs
    Credentials come from the environment only: each provider's variables
    (`seedbatch plugins` lists them).

    Exit codes: 0 all jobs succeeded, 1 some failed or did not run, 2 bad input,
    3 fatal provider error (credentials, balance), 130 interrupted.
    """
    from runner import api

    emulate_faults = _faults_option(emulate_faults)
    prepared = api.prepare(manifest, emulate=emulate, max_usd=max_usd,
                           concurrency=concurrency, only=only, force=force, runs_dir=runs_dir,
                           store=store)
    if not quiet:
        click.echo(plan_summary(prepared), err=True)
    if not emulate and not yes and prepared.to_run:
        if not sys.stdin.isatty():
            fail("refusing to spend without confirmation: no terminal to ask on. Pass --yes "
                 "to run anyway (or --emulate to try it for free).", EXIT_INPUT)
        if not click.confirm("Run it and spend this?", default=False, err=True):
            fail("not run: nothing was submitted", EXIT_INPUT)
    result = api.execute(prepared, runs_dir=runs_dir, quiet=quiet,
                         emulate_latency=emulate_latency, emulate_faults=emulate_faults)
    _echo_result(result, quiet)
    sys.exit(result.exit_code)


@main.command(context_settings={"max_content_width": 100})
@click.argument("run_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--retry-unknown", is_flag=True,
              help="Submit again the jobs whose outcome is unknown (a task may exist and be "
                   "billed: you may pay twice for them).")
@click.option("--emulate", is_flag=True,
              help="Resume an emulated run on a fresh in-process emulator.")
@click.option("--emulate-latency", type=click.FloatRange(min=0), default=1.0,
              show_default=True, help="Seconds each emulated task takes.")
@click.option("--max-usd", type=float, default=None, help="Spend at most this many USD.")
@click.option("--concurrency", type=click.IntRange(min=1), default=None,
              help="At most N tasks in flight per provider.")
@click.option("--quiet", "-q", is_flag=True, help="Print only the final summary.")
@click.option("--store", "store", metavar="URL", default=None,
              help="The shared output store: a path or an fsspec URL (s3://…, gs://…, "
                   "az://…). Wins over SEEDBATCH_STORE and the store the run used.")
@handles_errors
def resume(run_dir: Path, retry_unknown: bool, emulate: bool, emulate_latency: float,
           max_usd: float | None, concurrency: int | None, quiet: bool,
           store: str | None) -> None:
    """Pick RUN_DIR up where it stopped, without submitting anything twice.

    Tasks that exist are followed and downloaded; jobs never submitted are submitted; a job
    whose submit was cut off has an unknown outcome and is left alone unless
    --retry-unknown says to send it again. Base URLs are the ones the run used, unless the
    providers' base-URL variables (`seedbatch plugins`) say otherwise.
    """
    from runner import api

    result = api.resume(run_dir, retry_unknown=retry_unknown, emulate=emulate,
                        emulate_latency=emulate_latency, max_usd=max_usd,
                        concurrency=concurrency, quiet=quiet, store=store)
    _echo_result(result, quiet)
    sys.exit(result.exit_code)


def _clip(text: str | None, width: int) -> str:
    text = (text or "").replace("\n", " ")
    return text if len(text) <= width else text[: width - 1] + "…"


@main.command(context_settings={"max_content_width": 100})
@click.argument("run_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the state as JSON.")
@handles_errors
def status(run_dir: Path, as_json: bool) -> None:
    """Show where every job of RUN_DIR stands (also while it runs)."""
    from runner import api

    st = api.status(run_dir)
    if as_json:
        click.echo(json.dumps(st.to_dict(), indent=2, ensure_ascii=False))
        return
    who = f"running (pid {st.running_pid})" if st.running_pid else "not running"
    click.echo(f"{st.run_dir}  {st.meta.get('name', '')}  {who}")
    counts = ", ".join(f"{state} {n}" for state, n in st.counts.items() if n)
    click.echo(f"jobs: {counts or 'none'}")
    click.echo(f"outputs: {st.outputs}; spent: {spend(st.spent_usd, st.spent_credits)}")
    if st.cancel_requested:
        click.echo("a cancel was requested")
    ran_on = st.ran_on_after_cancel()
    if ran_on:
        usd, credits = st.ran_on_cost()
        still = sum(1 for r in ran_on if r.state.attached)
        click.echo(f"ran on after a cancel (the host cannot stop a task): {len(ran_on)} "
                   f"job{'s' if len(ran_on) != 1 else ''}, {spend(usd, credits)}"
                   + (f"; {still} still running — `seedbatch resume {st.run_dir}` downloads "
                      f"{'them' if still != 1 else 'it'}" if still else ""))
    width = max([len(r.name) for r in st.jobs] + [4])
    width = min(width, 40)
    click.echo(f"{'name':<{width}}  {'state':<11} {'att':>3} {'polls':>5}  {'task':<14} note")
    for r in st.jobs:
        note = r.error or r.reason or ""
        if r.key in st.ran_on and r.state.attached:
            note = "running (cannot be cancelled)"
        elif r.key in st.ran_on:
            note = "ran on after a cancel" + (f"; {note}" if note else "")
        click.echo(f"{_clip(r.name, width):<{width}}  {r.state!s:<11} {r.attempts:>3} "
                   f"{r.polls:>5}  {_clip(r.task_id, 14):<14} {_clip(note, 60)}")


@main.command(context_settings={"max_content_width": 100})
@click.argument("run_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--wait", type=click.FloatRange(min=0), default=30.0, show_default=True,
              help="Seconds to wait for a running process to stop.")
@handles_errors
def cancel(run_dir: Path, wait: float) -> None:
    """Stop RUN_DIR's remote tasks.

    If a seedbatch process is running it, that process is told to cancel its tasks and
    stop (exit 130). Otherwise the tasks the journal shows in flight are cancelled from
    here (credentials from the environment, as for run).
    """
    from runner import api

    res = api.cancel(run_dir, wait=wait)
    if res.signalled_pid is not None or not res.stopped:
        who = f"process {res.signalled_pid}" if res.signalled_pid else "the running process"
        if res.stopped:
            click.echo(f"asked {who} to cancel; it cancelled its tasks and stopped")
        else:
            fail(f"asked {who} to cancel; it has not stopped after {wait:g} s "
                 f"(check: seedbatch status {res.run_dir})", 1)
        return
    click.echo(f"cancelled {res.cancelled} remote task{'s' if res.cancelled != 1 else ''}")
    if res.running_on:
        n = len(res.running_on)
        click.echo(f"{n} task{'s' if n != 1 else ''} cannot be cancelled (the host has no way to "
                   f"stop {'them' if n != 1 else 'it'}): {', '.join(res.running_on[:5])}"
                   f"{' …' if n > 5 else ''} — running on and billed; "
                   f"`seedbatch resume {res.run_dir}` downloads the outputs", err=True)
    for problem in res.problems:
        click.echo(f"note: {problem}", err=True)
    if res.problems:
        sys.exit(1)
