"""``seedbatch view``, ``pick``, ``picks`` and ``export``: choosing among a batch's outputs."""

from __future__ import annotations

import contextlib
import fnmatch
import json
from pathlib import Path
from typing import Any

import click

from runner.cli import handles_errors, main
from runner.errors import EXIT_FAILED, ConfigError

_GLOB = set("*?[")


def _targets(plan: Any, specs: tuple[str, ...]) -> list[tuple[Any, int]]:
    """``JOB`` / ``JOB/INDEX`` (names or shell-style patterns) → (job, image index) pairs
    of the plan; every unknown name is an error before anything is written."""
    by_name = {job.name: job for job in plan.jobs}
    found: list[tuple[Any, int]] = []
    for spec in specs:
        name, sep, tail = spec.rpartition("/")
        if not (sep and tail.isdigit()):
            name, tail = spec, "0"
        index = int(tail)
        if _GLOB & set(name):
            matched = [job for job in plan.jobs if fnmatch.fnmatchcase(job.name, name)]
        else:
            matched = [by_name[name]] if name in by_name else []
        if not matched:
            close = ", ".join(sorted(by_name)[:8])
            raise ConfigError(f"no job named {name!r} in the plan of {plan.manifest_path.name}; "
                              f"jobs: {close}{' …' if len(by_name) > 8 else ''} "
                              "(`seedbatch plan` lists them all)")
        found.extend((job, index) for job in matched)
    return found


@main.command("pick", context_settings={"max_content_width": 100})
@click.argument("manifest", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("jobs", nargs=-1, required=True, metavar="JOB[/INDEX]...")
@click.option("--reject", "verdict", flag_value="reject", help="Reject instead of pick.")
@click.option("--clear", "verdict", flag_value="clear",
              help="Forget the verdict, stars and note (then --stars/--note, if given).")
@click.option("--stars", type=click.IntRange(0, 5), help="1 to 5 stars; 0 removes them.")
@click.option("--note", help="A note for people (an empty one removes it).")
@handles_errors
def pick_cmd(manifest: Path, jobs: tuple[str, ...], verdict: str | None, stars: int | None,
             note: str | None) -> None:
    """Record a verdict for images of MANIFEST's jobs in <stem>.picks.json beside it.

    JOB is a job name of the manifest's current plan (or a pattern: 'tent-*'); /INDEX
    chooses the image of a job that returns several (default 0). The verdict is keyed by
    the job's key, so it holds for as long as the job's spec does. Writes are atomic and
    locked: the viewer and this command can write at the same time.

    \b
    Examples:
      seedbatch pick manifests/quickstart.yaml paper-crane-v3
      seedbatch pick hero.yaml 'tent-*-v4/1' --stars 4 --note "crisp edges"
      seedbatch pick hero.yaml boots-dusk-pix --reject
      seedbatch pick hero.yaml boots-dusk-pix --clear
    """
    from runner.manifest import load_plan
    from runner.review.picks import Change, apply_change, picks_path_for, update_picks

    plan = load_plan(manifest)
    targets = _targets(plan, jobs)
    change = Change(verdict="reject" if verdict == "reject" else
                    None if verdict == "clear" else "pick",
                    stars=stars, note=note, clear=verdict == "clear")
    path = picks_path_for(plan.manifest_path)

    def edit(picks: dict[str, Any]) -> dict[str, Any]:
        for job, index in targets:
            picks = apply_change(picks, job.key, job.name, index, change)
        return picks

    update_picks(path, edit, plan.manifest_path.name)
    what = "cleared" if verdict == "clear" else "rejected" if verdict == "reject" else "picked"
    for job, index in targets:
        click.echo(f"{what} {job.name}/{index}")
    click.echo(f"wrote {path}", err=True)


def picks_rows(plan: Any, picks: dict[str, Any]) -> tuple[list[dict[str, Any]], int]:
    """The verdicts that concern the plan's jobs (own or previous), and how many verdicts
    belong to jobs no longer in the plan."""
    from runner.review.picks import keys_by_name

    by_name = keys_by_name(picks)
    rows: list[dict[str, Any]] = []
    used: set[str] = set()
    for job in plan.jobs:
        if job.key in picks["jobs"]:
            key = job.key
        else:
            earlier = [k for k in by_name.get(job.name, ()) if k != job.key]
            if not earlier:
                continue
            key = earlier[0]
        used.add(key)
        for index, image in sorted(picks["jobs"][key]["images"].items(),
                                   key=lambda item: int(item[0])):
            rows.append({"job": job.name, "index": int(index), "key": job.key,
                         "verdict": image.get("verdict"), "stars": image.get("stars"),
                         "note": image.get("note"), "previous": key != job.key})
    stale = sum(len(entry["images"]) for key, entry in picks["jobs"].items()
                if key not in used)
    return rows, stale


@main.command("picks", context_settings={"max_content_width": 100})
@click.argument("manifest", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the verdicts as JSON.")
@handles_errors
def picks_cmd(manifest: Path, as_json: bool) -> None:
    """List the verdicts recorded for MANIFEST's current plan (<stem>.picks.json).

    A verdict given to a job whose spec has since changed (a new key, the same name) is
    shown as "previous": judge it again in `seedbatch view` or with `seedbatch pick`.

    \b
    Examples:
      seedbatch picks manifests/quickstart.yaml
      seedbatch picks hero.yaml --json | jq '.picks[] | select(.verdict == "pick")'
    """
    from runner.manifest import load_plan
    from runner.review.picks import picks_path_for, read_picks

    plan = load_plan(manifest)
    path = picks_path_for(plan.manifest_path)
    picks = read_picks(path, plan.manifest_path.name)
    rows, stale = picks_rows(plan, picks)
    if as_json:
        click.echo(json.dumps({"picks_file": str(path), "picks": rows,
                               "not_in_plan": stale}, indent=2, ensure_ascii=False))
        return
    if not rows:
        click.echo(f"no verdicts yet for {plan.manifest_path.name} "
                   f"(seedbatch view, or seedbatch pick {manifest} JOB)")
    width = max((len(f"{r['job']}/{r['index']}") for r in rows), default=0)
    for row in rows:
        parts = [row["verdict"] or "-"]
        if row["stars"]:
            parts.append("★" * row["stars"])
        if row["note"]:
            parts.append(json.dumps(row["note"], ensure_ascii=False))
        line = f"{row['job'] + '/' + str(row['index']):<{width}}  {' '.join(parts)}"
        if row["previous"]:
            line += "  (previous: the job's spec changed; judge it again)"
        click.echo(line)
    picked = sum(1 for r in rows if r["verdict"] == "pick" and not r["previous"])
    rejected = sum(1 for r in rows if r["verdict"] == "reject" and not r["previous"])
    click.echo(f"{picked} picked, {rejected} rejected"
               + (f", {stale} verdicts for jobs no longer in the plan" if stale else ""),
               err=True)


@main.command("export", context_settings={"max_content_width": 100})
@click.argument("manifest", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--to", "to", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="The folder to copy into (created if missing).")
@click.option("--picked", "mode", flag_value="picked", default=True,
              help="Export the picked images (the default).")
@click.option("--all", "mode", flag_value="all",
              help="Export every job's latest outputs, judged or not.")
@click.option("--runs-dir", type=click.Path(file_okay=False, path_type=Path),
              default=Path("runs"), show_default=True, help="Where to look for the runs.")
@click.option("--force", is_flag=True, help="Replace files in DIR that hold other content.")
@click.option("--include-emulated", is_flag=True,
              help="Also export outputs an emulator made (labelled emulated in "
                   "provenance.json); never without this flag.")
@handles_errors
def export_cmd(manifest: Path, to: Path, mode: str, runs_dir: Path, force: bool,
               include_emulated: bool) -> None:
    """Copy the chosen images of MANIFEST into DIR, with DIR/provenance.json.

    For each job of the manifest's current plan: its latest succeeded outputs under
    --runs-dir, named by the manifest's output.filename. provenance.json says, for each
    file, the job's name and key, model, host, prompt, final params, reference image
    hashes, run id, task id, sha256 and cost. Every copy is verified by sha256; a file
    with other content already in DIR is left alone unless --force. Exit 1, listing them,
    when anything could not be exported.

    \b
    Examples:
      seedbatch export hero.yaml --to deliver/
      seedbatch export hero.yaml --to review/ --all --runs-dir runs
      seedbatch export manifests/quickstart.yaml --to out/ --include-emulated   # a rehearsal
    """
    from runner.manifest import load_plan
    from runner.report.cache import scan_runs
    from runner.review.export import plan_export, run_export
    from runner.review.picks import picks_path_for, read_picks
    from runner.rundir import output_names

    plan = load_plan(manifest)
    picks = read_picks(picks_path_for(plan.manifest_path), plan.manifest_path.name)
    names = {job.key: output_names(plan, job) for job in plan.jobs}
    chosen = plan_export(plan.jobs, names, picks, scan_runs(runs_dir),
                         "all" if mode == "all" else "picked", include_emulated)
    if not chosen.items and not chosen.missing:
        click.echo("nothing to export: no image is picked yet (seedbatch view, or "
                   f"seedbatch pick {manifest} JOB); --all exports every job's outputs")
        return
    result = run_export(chosen, to, manifest_name=plan.manifest_path.name,
                        manifest_sha256=plan.manifest_sha256, force=force)
    for name in result.copied:
        click.echo(f"copied {name}")
    if result.unchanged:
        click.echo(f"{len(result.unchanged)} already in {to}, unchanged")
    if result.emulated:
        click.echo(f"emulated (a rehearsal, not real results): {', '.join(result.emulated)}")
    if result.provenance is not None:
        click.echo(f"wrote {result.provenance}", err=True)
    if result.problems:
        click.echo(f"not exported ({len(result.problems)}):", err=True)
        for problem in result.problems:
            click.echo(f"  {problem}", err=True)
        raise SystemExit(EXIT_FAILED)


@main.command("view", context_settings={"max_content_width": 100})
@click.argument("runs_dir", required=False, default="runs",
                type=click.Path(file_okay=False, path_type=Path))
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on; anything but loopback lets others on the network "
                   "see the runs and change the picks.")
@click.option("--port", type=click.IntRange(0, 65535), default=8686, show_default=True,
              help="Port to listen on (0: any free port).")
@click.option("--no-open", is_flag=True, help="Do not open a browser.")
@handles_errors
def view_cmd(runs_dir: Path, host: str, port: int, no_open: bool) -> None:
    """Review the runs under RUNS_DIR (default runs/) in a local web app.

    Runs (newest first, live while one is going), each run's gallery with filters and an
    A/B grid by any two axes, two runs (or two values of an axis) side by side, and a
    full-size viewer: ← → move, p pick, x reject, 1–5 stars, u clear, a note field.
    Every verdict is saved at once to <manifest stem>.picks.json beside the run's
    manifest. Works offline: nothing is loaded from elsewhere. Ctrl-C stops it.

    \b
    Examples:
      seedbatch view                       # runs/, opens http://127.0.0.1:8686
      seedbatch view runs --port 9000 --no-open
    """
    from runner.review.app import is_loopback, serve

    if not runs_dir.is_dir():
        raise ConfigError(f"{runs_dir}: no such folder of runs (seedbatch run MANIFEST "
                          "creates runs/)")
    if not is_loopback(host):
        click.echo(f"warning: listening on {host}: anyone who can reach it can see these "
                   "runs and change the picks", err=True)

    def ready(url: str) -> None:
        click.echo(f"seedbatch view: {url}  (Ctrl-C stops)", err=True)
        if not no_open:
            import webbrowser

            webbrowser.open(url)

    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C is how it stops
        serve(runs_dir, host, port, on_ready=ready)
