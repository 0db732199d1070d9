"""``seedbatch push`` and ``seedbatch pull``: fill and read the shared output store."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from runner.cli import fail, handles_errors, main
from runner.errors import EXIT_FAILED

_STORE_HELP = ("The shared output store: a path or an fsspec URL (s3://…, gs://…, az://…). "
               "Wins over SEEDBATCH_STORE and the manifest's store:.")


@main.command(context_settings={"max_content_width": 100})
@click.argument("run_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--store", "store", metavar="URL", default=None, help=_STORE_HELP)
@handles_errors
def push(run_dir: Path, store: str | None) -> None:
    """Upload RUN_DIR's outputs and job records that the store lacks.

    Every output a real run downloaded is checked against the sha256 the run recorded and
    stored once under its content hash; each job gets a record (sha256s, model, host, run,
    task id, cost). Objects and records already in the store are left alone, so pushing
    twice, or from two machines at once, is safe. Outputs an emulator made are never
    pushed. The store is --store, else SEEDBATCH_STORE, else the one the run used.

    \b
    Examples:
      seedbatch push runs/20260102T030405Z-hero-1a2b          # finish a run's uploads
      seedbatch push runs/<run> --store s3://team-bucket/seedbatch
      SEEDBATCH_STORE=/mnt/shared/seedbatch seedbatch push runs/<run>

    Exit status: 0 everything is stored, 1 some job could not be (named), 2 bad input.
    """
    from runner import api

    result = api.push(run_dir, store=store)
    s = result.summary
    click.echo(f"store {s.url}: {s.stored} of {result.considered} "
               f"job{'s' if result.considered != 1 else ''} stored "
               f"({s.objects_written} new object{'s' if s.objects_written != 1 else ''})")
    if result.emulated:
        click.echo(f"left out: {result.emulated} emulated job"
                   f"{'s' if result.emulated != 1 else ''} (placeholders never enter a store)")
    if s.failed:
        for key, why in sorted(s.failed.items(), key=lambda kv: s.names.get(kv[0], kv[0])):
            click.echo(f"not stored: {s.names.get(key, key)}: {why}", err=True)
        fail(f"{len(s.failed)} job{'s' if len(s.failed) != 1 else ''} not stored; run "
             f"`seedbatch push {result.run_dir}` again when the store is back", EXIT_FAILED)


@main.command(context_settings={"max_content_width": 100})
@click.argument("manifest", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--store", "store", metavar="URL", default=None, help=_STORE_HELP)
@click.option("--to", "to", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Write the outputs into this folder, named by output.filename, instead "
                   "of a new run directory.")
@click.option("--runs-dir", type=click.Path(file_okay=False, path_type=Path),
              default=Path("runs"), show_default=True,
              help="Where the new run directory is created (without --to).")
@click.option("--quiet", "-q", is_flag=True, help="Print only the final summary.")
@handles_errors
def pull(manifest: Path, store: str | None, to: Path | None, runs_dir: Path,
         quiet: bool) -> None:
    """Place MANIFEST's outputs from the store, without running anything.

    Every job of the plan is looked up by its key; its outputs are fetched and checked
    against their sha256. Without --to they go into a new run directory (journal, report,
    lockfile, `seedbatch verify` as after a run; each job "from store", $0). With --to they
    are written under that folder, named by output.filename. No provider is contacted and
    no credential is needed but the store's own.

    \b
    Examples:
      seedbatch pull hero.yaml --store s3://team-bucket/seedbatch
      seedbatch pull hero.yaml --to assets/hero          # just the files
      SEEDBATCH_STORE=/mnt/shared/seedbatch seedbatch pull hero.yaml

    Exit status: 0 every job was placed, 1 the store lacks some (listed), 2 bad input.
    """
    from runner import api
    from runner.cli.run_cmds import result_summary

    result = api.pull(manifest, store=store, runs_dir=runs_dir, to=to, quiet=quiet)
    if result.folder is not None:
        f = result.folder
        click.echo(f"store {result.store_url}: {len(f.written)} file"
                   f"{'s' if len(f.written) != 1 else ''} written, {len(f.unchanged)} already "
                   f"there, under {to}")
        for problem in f.damaged:
            click.echo(f"not placed: {problem}", err=True)
    elif result.run is not None:
        click.echo(result_summary(result.run))
    for name in result.missing:
        click.echo(f"not in the store: {name}", err=True)
    if result.missing:
        n = len(result.missing)
        click.echo(f"{n} job{'s' if n != 1 else ''} not in store {result.store_url}: run "
                   f"the manifest to make {'them' if n != 1 else 'it'}", err=True)
    sys.exit(result.exit_code)
