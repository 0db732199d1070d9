"""``seedbatch export``: the chosen images of a manifest, copied out with their provenance.

:func:`plan_export` (pure) decides, for each job of the manifest's current plan, which
files to copy: the latest succeeded outputs of that exact job key among the runs found
(newest first) — every image with ``all``, the picked images with ``picked`` — and names
each by the manifest's ``output.filename``. Outputs an emulator made are passed over
unless asked for, and then labelled ``"emulated": true``. What cannot be exported (a pick
whose output is missing, a job picked before its spec changed) is listed, never skipped
in silence.

:func:`run_export` is the shell: every source is re-hashed against its report before it
is copied, every copy is hashed as it is written and moved into place only if it matches;
an existing file with other content is left alone unless ``force``. ``provenance.json``
in the target folder (sorted, stable) says where each file came from::

    {"version": 1, "manifest": "autumn-hero.yaml", "manifest_sha256": "…",
     "files": {"tent-dusk-v4/0.png": {"job", "key", "index", "model", "host", "prompt",
               "params", "inputs": [{"ref", "url", "sha256"}], "run_id", "task_id",
               "sha256", "bytes", "cost_usd", "credits", "emulated", "reused_from",
               "verdict", "stars", "note"}}}

``cost_usd`` and ``credits`` are the job's (one task may return several images), as its
run's report.json records them.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Literal

from runner.errors import ConfigError
from runner.files import atomic_write_text
from runner.jobs import Job, sha256_file
from runner.report.cache import EarlierRun, output_is_emulated
from runner.review.picks import keys_by_name
from runner.rundir import output_name_for

PROVENANCE = "provenance.json"
PROVENANCE_VERSION = 1
Mode = Literal["picked", "all"]


@dataclass(frozen=True)
class ExportItem:
    name: str  # relative to the target folder
    source: Path
    sha256: str
    bytes: int | None
    provenance: Mapping[str, Any]


@dataclass(frozen=True)
class ExportPlan:
    items: tuple[ExportItem, ...]
    missing: tuple[str, ...]  # "<job>/<index>: why"


def _latest(runs: Sequence[EarlierRun], key: str, include_emulated: bool
            ) -> tuple[EarlierRun, Mapping[str, Any]] | str:
    """The newest run holding succeeded outputs of job ``key``, or why there is none."""
    emulated_only = False
    for run in runs:
        for job in run.report.get("jobs", []):
            if job.get("key") != key or job.get("status") != "succeeded" or not job.get(
                    "outputs"):
                continue
            if output_is_emulated(run.report, job) and not include_emulated:
                emulated_only = True
                continue
            return run, job
    if emulated_only:
        return "only emulated outputs (a rehearsal); pass --include-emulated to export them"
    return "no run holds a succeeded output of it"


def provenance_of(run: EarlierRun, job: Mapping[str, Any], output: Mapping[str, Any],
                  shown: Mapping[str, Any]) -> dict[str, Any]:
    """The provenance of one exported file, from its run's report. Pure."""
    return {
        "job": job["name"],
        "key": job["key"],
        "index": output["index"],
        "model": job["model"],
        "host": job["provider"],
        "prompt": job["prompt"],
        "params": job["params"],
        "inputs": [{"ref": i.get("ref"), "url": i.get("url"), "sha256": i.get("sha256")}
                   for i in job.get("inputs", [])],
        "run_id": run.run_id,
        "task_id": job.get("task_id"),
        "sha256": output["sha256"],
        "bytes": output.get("bytes"),
        "cost_usd": job.get("cost_usd"),
        "credits": job.get("credits"),
        "emulated": output_is_emulated(run.report, job),
        "reused_from": job.get("reused_from"),
        "verdict": shown.get("verdict"),
        "stars": shown.get("stars"),
        "note": shown.get("note"),
    }


def plan_export(jobs: Sequence[Job], names: Mapping[str, Mapping[str, Mapping[str, str]]],
                picks: Mapping[str, Any], runs: Sequence[EarlierRun], mode: Mode = "picked",
                include_emulated: bool = False) -> ExportPlan:
    """What to copy for the plan's ``jobs`` (``names``: job key → index → ext → output
    name), given the picks and the runs (newest first). Pure."""
    items: list[ExportItem] = []
    missing: list[str] = []
    by_name = keys_by_name(picks)
    taken: dict[str, str] = {}
    for job in jobs:
        own = picks.get("jobs", {}).get(job.key, {}).get("images", {})
        if mode == "picked":
            wanted = sorted(int(i) for i, v in own.items() if v.get("verdict") == "pick")
            if not own:
                for other in by_name.get(job.name, ()):
                    if other != job.key and any(
                            v.get("verdict") == "pick"
                            for v in picks["jobs"][other]["images"].values()):
                        missing.append(f"{job.name}: picked before its spec changed "
                                       "(a new key); pick it again")
                        break
            if not wanted:
                continue
        found = _latest(runs, job.key, include_emulated)
        if isinstance(found, str):
            label = (", ".join(f"{job.name}/{i}" for i in wanted) if mode == "picked"
                     else job.name)
            missing.append(f"{label}: {found}")
            continue
        run, record = found
        outputs = {int(o["index"]): o for o in record["outputs"]}
        indexes = wanted if mode == "picked" else sorted(outputs)
        for index in indexes:
            output = outputs.get(index)
            if output is None:
                missing.append(f"{job.name}/{index}: run {run.run_id} has no image {index} "
                               f"of it")
                continue
            ext = PurePosixPath(str(output["path"])).suffix.lstrip(".").lower()
            name = output_name_for(names.get(job.key, {}), index, ext)
            if name == PROVENANCE:
                missing.append(f"{job.name}/{index}: would be named {PROVENANCE}, which the "
                               "export writes; change output.filename")
                continue
            if name in taken:
                missing.append(f"{job.name}/{index}: named {name} like {taken[name]}; make "
                               "output.filename tell them apart")
                continue
            taken[name] = f"{job.name}/{index}"
            shown = own.get(str(index), {})
            items.append(ExportItem(
                name=name, source=run.run_dir / str(output["path"]),
                sha256=str(output["sha256"]), bytes=output.get("bytes"),
                provenance=provenance_of(run, record, output, shown)))
    return ExportPlan(tuple(items), tuple(missing))


# -- the shell -------------------------------------------------------------------------------

@dataclass
class ExportResult:
    copied: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    emulated: list[str] = field(default_factory=list)
    provenance: Path | None = None


def _copy_verified(source: Path, target: Path, sha256: str) -> None:
    """Copy ``source`` to ``target`` through a temporary file beside it, moved into place
    only when its sha256 is ``sha256``; a ConfigError otherwise."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        digest = hashlib.sha256()
        with os.fdopen(fd, "wb") as out, source.open("rb") as src:
            while chunk := src.read(1 << 20):
                digest.update(chunk)
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        if digest.hexdigest() != sha256:
            raise ConfigError(f"{target}: the copy's sha256 is not the recorded one")
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def read_provenance(path: Path) -> dict[str, Any]:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        raise ConfigError(f"{path} is not readable JSON; move it away to export here"
                          ) from None
    return doc if isinstance(doc, dict) and isinstance(doc.get("files"), dict) else {}


def run_export(plan: ExportPlan, to: Path, *, manifest_name: str, manifest_sha256: str,
               force: bool = False) -> ExportResult:
    """Copy ``plan``'s files into ``to`` and write ``to/provenance.json``."""
    result = ExportResult(problems=list(plan.missing))
    try:
        to.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create {to}: {exc.strerror or exc}") from None
    old = read_provenance(to / PROVENANCE)
    files: dict[str, Any] = {name: entry for name, entry in old.get("files", {}).items()
                             if (to / name).is_file()}
    for item in plan.items:
        target = to / item.name
        label = f"{item.provenance['job']}/{item.provenance['index']}"
        try:
            if not item.source.is_file() or sha256_file(item.source) != item.sha256:
                result.problems.append(f"{label}: {item.source} is missing or changed since "
                                       "its run (seedbatch verify tells more)")
                continue
            if target.exists():
                if target.is_file() and sha256_file(target) == item.sha256:
                    result.unchanged.append(item.name)
                    files[item.name] = dict(item.provenance)
                    continue
                if not force:
                    result.problems.append(f"{label}: {target} exists with other content; "
                                           "--force replaces it")
                    continue
            _copy_verified(item.source, target, item.sha256)
        except OSError as exc:
            result.problems.append(f"{label}: cannot copy to {target}: "
                                   f"{exc.strerror or exc}")
            continue
        result.copied.append(item.name)
        files[item.name] = dict(item.provenance)
    result.emulated = [name for name in (*result.copied, *result.unchanged)
                       if files[name].get("emulated")]
    if files or old:
        doc = {"version": PROVENANCE_VERSION, "manifest": manifest_name,
               "manifest_sha256": manifest_sha256, "files": files}
        text = json.dumps(doc, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
        atomic_write_text(to / PROVENANCE, text)
        result.provenance = to / PROVENANCE
    return result
