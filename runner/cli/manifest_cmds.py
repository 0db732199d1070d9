"""``seedbatch validate``, ``seedbatch plan`` and ``seedbatch models``."""

from __future__ import annotations

import json
import os
import sys
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from runner import catalog
from runner.catalog import describe_model
from runner.cli import fail, handles_errors, main
from runner.display import credits_fixed, usd_precise
from runner.errors import EXIT_INPUT, ManifestError, ManifestErrors
from runner.jobs import Job, Plan

if TYPE_CHECKING:
    from rich.console import Console, JustifyMethod
    from rich.table import Table

    from runner.report.cache import CacheDecision

PLAN_GUARD = 10_000  # plans above this many jobs need --yes (or a "y" on a terminal)
SHOWN_ROWS = 20  # job rows `plan` prints for a big plan


def _interactive() -> bool:
    return sys.stdin.isatty() and sys.stderr.isatty()


def _console() -> Console:
    from rich.console import Console

    # a pipe or a file gets whole lines rather than columns cut to 80 characters
    return Console(highlight=False, width=None if sys.stdout.isatty() else 160)


@main.command()
@click.argument("manifests", nargs=-1, required=True, metavar="MANIFEST...")
@handles_errors
def validate(manifests: tuple[str, ...]) -> None:
    """Check manifests and report every problem at once.

    Each problem is printed as FILE:LINE:COL: message (at $.json.path), pointing at
    the offending node: YAML syntax, unknown keys (with the allowed ones), unknown
    models, aliases or image sets, missing or non-image reference files, undefined
    template variables, parameters a model refuses, duplicate job names, output
    names that would leave the outputs folder. Valid files print
    "ok: FILE (N jobs)".

    \b
    Examples:
      seedbatch validate manifests/quickstart.yaml
      seedbatch validate manifests/*.yaml

    Exit status: 0 when every file is valid, 2 otherwise.
    """
    from runner.manifest import check

    problems: list[ManifestError] = []
    for path in manifests:
        plan, errors = check(path, display=path)
        if errors or plan is None:
            problems.extend(errors)
        else:
            n = len(plan.jobs)
            click.echo(f"ok: {path} ({n:,} job{'s' if n != 1 else ''})")
    if problems:
        raise ManifestErrors(problems)


def job_table(jobs: list[Job] | tuple[Job, ...], plan: Plan, total: int,
              status_of: Callable[[Job], str] | None = None) -> Table:
    from rich.table import Table

    title = f"Jobs ({len(jobs):,} of {total:,})" if len(jobs) < total else "Jobs"
    table = Table(title=title, title_justify="left", show_edge=False)
    table.add_column("#", justify="right")
    if status_of is not None:
        table.add_column("Status")
    table.add_column("Name", overflow="fold")
    table.add_column("Model")
    table.add_column("Refs", justify="right")
    table.add_column("Images", justify="right")
    table.add_column("Output", overflow="fold")
    table.add_column("Key")
    for i, job in enumerate(jobs, 1):
        row = [str(i)]
        if status_of is not None:
            row.append(status_of(job))
        row += [job.name, job.alias, str(len(job.images)), str(job.estimate.images),
                plan.output_name(job, 0, "png"), job.key[:12]]
        table.add_row(*row)
    return table


def model_table(plan: Plan) -> Table:
    from rich.table import Table

    from runner.manifest.plan import summarize

    table = Table(title="By model", title_justify="left", show_edge=False)
    columns: tuple[tuple[str, JustifyMethod], ...] = (
        ("Model", "left"), ("Provider", "left"), ("Aliases", "left"), ("Jobs", "right"),
        ("Images", "right"), ("Est. USD", "right"), ("Est. credits", "right"))
    for name, justify in columns:
        table.add_column(name, justify=justify)
    rows = summarize(plan.jobs)
    for r in rows:
        table.add_row(r.model, r.provider, ", ".join(r.aliases), f"{r.jobs:,}",
                      f"{r.images:,}", usd_precise(r.usd), credits_fixed(r.credits))
    total = plan.estimate()
    table.add_section()
    table.add_row("Total", "", "", f"{len(plan.jobs):,}", f"{total.images:,}",
                  usd_precise(total.usd), credits_fixed(total.credits), style="bold")
    return table


def print_plan(plan: Plan, console: Console, *, rows: int = SHOWN_ROWS,
               status: Mapping[str, str] | None = None) -> None:
    """The human form of a plan: jobs by model with costs, budget, the first job rows."""
    n = len(plan.jobs)
    console.print(f"[bold]{plan.name}[/bold] — {plan.manifest_path.name}: {n:,} "
                  f"job{'s' if n != 1 else ''}")
    console.print(model_table(plan))
    total = plan.estimate()
    budget = plan.budget
    for cap, spent, unit in ((budget.max_usd, total.usd, "usd"),
                             (budget.max_credits, total.credits, "credits")):
        if cap is None:
            continue
        shown_cap = usd_precise(cap) if unit == "usd" else f"{credits_fixed(cap)} credits"
        shown = usd_precise(spent) if unit == "usd" else f"{credits_fixed(spent)} credits"
        verdict = ("[green]within budget[/green]" if spent <= cap + 1e-9
                   else "[red]OVER BUDGET: `seedbatch run` will refuse[/red]")
        console.print(f"budget {shown_cap}: estimate {shown} — {verdict}")
    console.print()
    shown_jobs = plan.jobs if n <= rows * 2 else plan.jobs[:rows]
    status_of = (lambda job: status.get(job.key, "new")) if status is not None else None
    console.print(job_table(shown_jobs, plan, n, status_of))
    if len(shown_jobs) < n:
        console.print(f"… and {n - len(shown_jobs):,} more (all of them: seedbatch plan "
                      f"--json)")
    console.print("Estimates use list prices (see `seedbatch models`) unless the manifest "
                  "sets `price:`; provider-reported costs win in reports.", style="dim")


@main.command()
@click.argument("manifest")
@click.option("--json", "as_json", is_flag=True,
              help='Print {"jobs": [...], "estimate": {...}} instead of tables.')
@click.option("--yes", "-y", is_flag=True,
              help=f"Plan even more than {PLAN_GUARD:,} jobs without asking.")
@click.option("--rows", type=click.IntRange(min=0), default=SHOWN_ROWS, show_default=True,
              help="Job rows to show for a big plan (all rows up to twice this).")
@click.option("--runs-dir", type=click.Path(file_okay=False, path_type=Path), default="runs",
              show_default=True,
              help="Where earlier runs live: jobs whose verified outputs are there are cached.")
@click.option("--force", is_flag=True,
              help="Plan as `seedbatch run --force` would: every job runs, none is cached.")
@click.option("--emulate", is_flag=True,
              help="Plan as `seedbatch run --emulate` would: only emulated outputs are cached.")
@click.option("--store", "store", metavar="URL", default=None,
              help="The shared output store (a path or fsspec URL); wins over SEEDBATCH_STORE "
                   "and the manifest's store:. Jobs it holds show as 'from store'.")
@handles_errors
def plan(manifest: str, as_json: bool, yes: bool, rows: int, runs_dir: Path,
         force: bool, emulate: bool, store: str | None) -> None:
    """Expand a manifest into jobs and estimate their cost, without running anything.

    Shows jobs grouped by model with counts, images and estimated USD/credits, the
    budget check, and the first jobs (name, model, reference images, output path,
    content key). A job's key is the sha256 of exactly what the provider will be
    asked, so the same spec has the same key on any machine.

    \b
    Examples:
      seedbatch plan manifests/ab-sweep.yaml
      seedbatch plan manifests/ab-sweep.yaml --json | jq '.estimate'
      seedbatch plan big-sweep.yaml --yes --rows 50
      seedbatch plan hero.yaml --store s3://team-bucket/seedbatch   # what a teammate made

    Each job is marked cached (verified outputs of an earlier run under --runs-dir, or
    listed in the manifest's lockfile, are reused for free), changed (a job of that name
    ran before with a different request) or new; the cost shown to run counts only the
    jobs that will be submitted. Reuse never crosses between the emulator and the real
    providers: outputs of an emulated rehearsal are not cached for a real run (the job
    shows as new, with why), and real ones are not cached under --emulate. With a shared
    store (--store, SEEDBATCH_STORE or the manifest's store:), a job it holds is cached
    "from store" (placed from it for $0 by `seedbatch run`).

    Plans of more than 10,000 jobs ask for confirmation first; without a terminal,
    pass --yes. Exit status: 0, or 2 for an invalid manifest.
    """
    from runner.manifest import load_manifest, plan_document, plan_manifest
    from runner.manifest.plan import gc_paused, plan_job_texts

    m = load_manifest(manifest, display=manifest)
    count = m.job_count
    if count > PLAN_GUARD and not yes:
        if not _interactive():
            fail(f"{manifest} expands to {count:,} jobs; to plan more than {PLAN_GUARD:,} "
                 f"jobs pass --yes (there is no terminal to ask)", EXIT_INPUT)
        if not click.confirm(f"{manifest} expands to {count:,} jobs. Plan them all?",
                             err=True, default=False):
            fail("not planned", EXIT_INPUT)
    with gc_paused():  # millions of objects, no cycles: see gc_paused
        result, errors = plan_manifest(m)
        if errors or result is None:
            raise ManifestErrors(errors)
        decisions = None if force else cache_decisions(result, runs_dir, emulate=emulate,
                                                       store=store)
        status = None if decisions is None else {k: d.status for k, d in decisions.items()}
        stored = set() if decisions is None else {k for k, d in decisions.items()
                                                  if d.reason.startswith(FROM_STORE)}
        if as_json:
            doc = plan_document(result, status, with_jobs=False)
            doc["estimate"]["to_run"] = _to_run(result, status)
            more = None
            if decisions is not None:
                found = decisions

                def more(job: Job) -> dict[str, Any]:
                    return {"status_reason": found[job.key].reason,
                            "from_store": job.key in stored}

            echo_json_listing(doc, "jobs", plan_job_texts(result, status, more))
            return
    console = _console()
    shown = None if status is None else {k: ("from store" if k in stored else s)
                                         for k, s in status.items()}
    print_plan(result, console, rows=rows, status=shown)
    if status is not None:
        from runner.report.cache import ONLY_EMULATED, ONLY_REAL

        counts = Counter(status.values())
        todo = _to_run(result, status)
        console.print(f"cached {counts['cached']:,} (reused, no cost"
                      + (f"; {len(stored):,} from store" if stored else "") + ") · changed "
                      f"{counts['changed']:,} · new {counts['new']:,} — to run: "
                      f"{todo['jobs']:,} job{'s' if todo['jobs'] != 1 else ''}, "
                      f"≈ {usd_precise(todo['usd'])} + {credits_fixed(todo['credits'])} credits")
        kinds = Counter(d.reason for d in (decisions or {}).values()
                        if d.status == "new" and d.reason in (ONLY_EMULATED, ONLY_REAL))
        for reason, n in sorted(kinds.items()):
            console.print(f"note: {n:,} new job{'s' if n != 1 else ''} — {reason}")


FROM_STORE = "from store"  # how a decision's reason starts when the store has the job
JSON_CHUNK = 2_000  # list items written to stdout at a time


def _batched(items: Iterable[str], n: int) -> Iterable[list[str]]:
    it = iter(items)
    while chunk := list(islice(it, n)):
        yield chunk


def echo_json_listing(doc: Mapping[str, Any], key: str, items: Iterable[str]) -> None:
    """Print ``doc`` as JSON indented by two spaces, with ``items`` (JSON texts) as the list
    ``doc[key]``, one item per line: the same keys and values as ``json.dumps(doc, indent=2)``
    with that list, written in chunks, so 100,000 jobs never sit in memory as one string."""
    head, sep, tail = json.dumps({**doc, key: []}, ensure_ascii=False,
                                 indent=2).partition(f'\n  {json.dumps(key)}: []')
    if not sep:  # pragma: no cover - `key` is a top-level key of `doc`
        raise ValueError(f"{key!r} is not a list of the document")
    click.echo(f"{head}{sep[:-1]}", nl=False)
    lead = "\n    "
    for chunk in _batched(items, JSON_CHUNK):
        click.echo(lead + ",\n    ".join(chunk), nl=False)
        lead = ",\n    "
    click.echo(f"\n  ]{tail}" if lead != "\n    " else f"]{tail}")


def cache_decisions(plan: Plan, runs_dir: Path, *, emulate: bool = False,
                    store: str | None = None) -> dict[str, CacheDecision]:
    """Job key → cached / changed / new (with why), against earlier runs and the manifest's
    lockfile, then the shared store, for a run made as ``run`` would make it (emulated or
    not)."""
    from runner.config import emulated_providers
    from runner.report.cache import CacheDecision, classify_in
    from runner.store.store import open_store_for

    emulated = emulated_providers(sorted({j.provider for j in plan.jobs}), plan.providers,
                                  os.environ, emulate=emulate)
    if not runs_dir.is_dir():
        decisions = {job.key: CacheDecision(job.key, job.name, "new",
                                            reason="no earlier outputs")
                     for job in plan.jobs}
    else:
        from runner.report.lock import lock_path_for, read_lock

        lock = read_lock(lock_path_for(plan.manifest_path))
        decisions = classify_in(plan.jobs, runs_dir, lock, emulated)
    shared = open_store_for(store, os.environ, plan.store)
    if shared is None:
        return decisions
    from runner.store.sync import store_records

    wanted = [job for job in plan.jobs if decisions[job.key].status != "cached"]
    for key, record in store_records(shared, wanted, emulated).items():
        old = decisions[key]
        decisions[key] = CacheDecision(key, old.name, "cached", run_id=record.run_id,
                                       reason=f"{FROM_STORE} (run {record.run_id})")
    return decisions


def _to_run(plan: Plan, status: Mapping[str, str] | None) -> dict[str, Any]:
    """The estimate of only the jobs that will be submitted (not cached)."""
    jobs = [j for j in plan.jobs if status is None or status.get(j.key) != "cached"]
    return {"jobs": len(jobs), "images": sum(j.estimate.images for j in jobs),
            "usd": round(sum(j.estimate.usd for j in jobs), 6),
            "credits": sum(j.estimate.credits for j in jobs)}


def _constraint(p: Mapping[str, Any]) -> str:
    bits = []
    if "enum" in p:
        bits.append("one of " + ", ".join(str(v) for v in p["enum"]))
    if "minimum" in p or "maximum" in p:
        bits.append(f"{p.get('minimum', '…')}..{p.get('maximum', '…')}")
    if "pattern" in p:
        bits.append(f"matches {p['pattern']}")
    return "; ".join(bits)


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print the catalog as JSON.")
@handles_errors
def models(as_json: bool) -> None:
    """List the models a manifest can use, with every parameter.

    For each model id: provider, endpoint, list price used for estimates, and each
    parameter with its type, default, allowed values or range and description, plus
    the cross-field rules seedbatch checks (pixel ranges, reference image counts), and
    what it makes of the portable settings size, count and seed. Parameters use the
    provider's own names; portable settings work on every model that supports them:

    \b
      models:
        hero: {model: <model id>, params: {<name>: <value>, …}}
        any:  {model: <model id>, size: 2048x2048, count: 2}

    \b
    Examples:
      seedbatch models
      seedbatch models --json | jq '.[].id'
    """
    from rich.table import Table

    described = [describe_model(spec) for spec in catalog.models().values()]
    if as_json:
        click.echo(json.dumps(described, ensure_ascii=False, indent=2))
        return
    console = _console()
    for d in described:
        price = d["price"]
        shown = []
        if price["usd_per_image"] is not None:
            shown.append(f"{usd_precise(price['usd_per_image'])} per image")
        if price["credits_per_image"] is not None:
            shown.append(f"{credits_fixed(price['credits_per_image'])} credits per image")
        console.print(f"[bold]{d['id']}[/bold] — {d['title']}")
        console.print(f"  provider {d['provider']}, endpoint {d['endpoint']}, list price "
                      f"{' / '.join(shown) or 'unknown'} ({price['source']})")
        table = Table(show_edge=False, pad_edge=False, box=None, padding=(0, 2))
        for col in ("parameter", "type", "default", "allowed", "description"):
            table.add_column(col, overflow="fold")
        for p in d["params"]:
            default = json.dumps(p["default"]) if "default" in p else ""
            table.add_row(p["name"], str(p["type"]), default, _constraint(p),
                          p["description"])
        console.print(table)
        for rule in d["rules"]:
            console.print(f"  • {rule}")
        portable = [f"{name}: {what}" for name, what in d["portable"].items() if what]
        missing = [name for name, what in d["portable"].items() if not what]
        if portable:
            console.print(f"  portable — {'; '.join(portable)}"
                          + (f" (no {', '.join(missing)})" if missing else ""))
        else:
            console.print("  portable — none: use its own params")
        console.print()


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print the providers as JSON.")
@handles_errors
def plugins(as_json: bool) -> None:
    """List the providers installed: built-in hosts and plugins alike.

    For each provider: its models, the package (distribution and version) that registered
    it, its credential and base-URL variables, whether it can cancel a task and whether it
    ships an emulator (for --emulate). Plugins that failed to load are listed too.
    SEEDBATCH_PLUGINS=name,… loads only those providers.

    \b
    Examples:
      seedbatch plugins
      SEEDBATCH_PLUGINS=acme seedbatch plugins --json
    """
    from runner.plugins import registry

    reg = registry()
    rows: list[dict[str, Any]] = [{"name": spec.name, "title": spec.title,
             "models": [m.id for m in spec.models],
             **reg.origins[spec.name].to_dict(),
             "credentials": list(spec.credentials), "base_url_var": spec.base_url_var,
             "default_base_url": spec.default_base_url, "can_cancel": spec.can_cancel,
             "emulator": spec.emulator.path if spec.emulator is not None else None}
            for spec in sorted(reg.providers.values(), key=lambda p: p.name)]
    if as_json:
        click.echo(json.dumps({"providers": rows, "not_loaded": list(reg.skipped),
                               "problems": list(reg.problems)}, indent=2))
        return
    for row in rows:
        where = f"{row['distribution'] or '?'} {row['version'] or ''}".strip()
        click.echo(f"{row['name']:<12} {where:<24} {', '.join(row['models'])}")
        click.echo(f"{'':<12} credentials {', '.join(row['credentials'])}; base URL "
                   f"{row['base_url_var']} ({row['default_base_url']}); "
                   f"{'can cancel' if row['can_cancel'] else 'cannot cancel'}; "
                   f"{'emulator at ' + row['emulator'] if row['emulator'] else 'no emulator'}")
    for name in reg.skipped:
        click.echo(f"{name:<12} installed, not loaded (SEEDBATCH_PLUGINS)")
    for problem in reg.problems:  # also named on stderr, as every command does
        click.echo(f"{'failed':<12} {problem}")


@main.command()
@handles_errors
def schema() -> None:
    """Print the manifest's JSON Schema for the providers installed here.

    schemas/manifest.schema.json covers the built-in hosts; with plugins installed, point
    your editor at this output instead (# yaml-language-server: $schema=…).

    \b
    Example:
      seedbatch schema > manifest.schema.json
    """
    from runner.manifest.schema import manifest_schema

    click.echo(json.dumps(manifest_schema(), indent=2, ensure_ascii=False))
