"""The picks file: ``<manifest stem>.picks.json`` beside the manifest, meant for git.

Like the lockfile (``runner/report/lock.py``) it is sorted, indented and stable, so that a
verdict shows up as a small diff::

    {"version": 1, "manifest": "autumn-hero.yaml",
     "jobs": {"<job key>": {"name": "tent-dusk-v4",           # for people; the key rules
                            "images": {"0": {"verdict": "pick", "stars": 4,
                                             "note": "the one"}}}}}

A verdict is keyed by job key and image index. An image entry holds only what was said
(``verdict`` — ``pick`` or ``reject`` —, ``stars`` 1–5, ``note``); one with nothing left
is dropped, and so is a job with no images left. Entries are never dropped because a job
left the plan: an unchanged job keeps its key and so its verdict across re-runs, and a job
whose spec changed (a new key, the same name) shows its old verdict as *previous*
(:func:`verdict_for`) until it is judged again.

Writers (browser tabs of ``seedbatch view``, ``seedbatch pick``) go through
:func:`update_picks`: read, change, write — under an exclusive ``flock`` on the manifest's
folder and by atomic replace, so two writers never lose each other's verdict and a reader
never sees half a file. Locking the folder leaves no lock file behind in the repository.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from runner.errors import ConfigError
from runner.files import atomic_write_text

PICKS_VERSION = 1
PICKS_SUFFIX = ".picks.json"
VERDICTS = ("pick", "reject")
MAX_STARS = 5
MAX_NOTE = 2000

Verdict = Literal["pick", "reject"]


def picks_path_for(manifest_path: str | Path) -> Path:
    """``manifests/autumn-hero.yaml`` → ``manifests/autumn-hero.picks.json``."""
    path = Path(manifest_path)
    return path.with_name(path.stem + PICKS_SUFFIX)


def empty_picks(manifest_name: str) -> dict[str, Any]:
    return {"version": PICKS_VERSION, "manifest": manifest_name, "jobs": {}}


@dataclass(frozen=True, slots=True)
class Change:
    """What to do to one image's entry. ``None`` leaves a field as it is; ``clear`` empties
    the whole entry first. ``stars=0`` and ``note=""`` remove those fields."""

    verdict: Verdict | None = None
    stars: int | None = None
    note: str | None = None
    clear: bool = False

    def __post_init__(self) -> None:
        if self.verdict is not None and self.verdict not in VERDICTS:
            raise ConfigError(f"verdict {self.verdict!r}: expected one of {', '.join(VERDICTS)}")
        if self.stars is not None and (isinstance(self.stars, bool)
                                       or not isinstance(self.stars, int)
                                       or not 0 <= self.stars <= MAX_STARS):
            raise ConfigError(f"stars {self.stars!r}: expected a whole number from 0 to "
                              f"{MAX_STARS} (0 removes them)")
        if self.note is not None and (not isinstance(self.note, str) or len(self.note) > MAX_NOTE):
            raise ConfigError(f"note: expected text of at most {MAX_NOTE} characters")


def apply_change(picks: Mapping[str, Any], key: str, name: str, index: int,
                 change: Change) -> dict[str, Any]:
    """``picks`` with ``change`` made to image ``index`` of job ``key``. Pure: a new document."""
    if not isinstance(index, int) or isinstance(index, bool) or index < 0:
        raise ConfigError(f"image index {index!r}: expected a whole number from 0")
    jobs = {k: {"name": v["name"], "images": dict(v["images"])}
            for k, v in picks.get("jobs", {}).items()}
    entry = jobs.get(key, {"name": name, "images": {}})
    entry["name"] = name or entry["name"]
    image: dict[str, Any] = {} if change.clear else dict(entry["images"].get(str(index), {}))
    if change.verdict is not None:
        image["verdict"] = change.verdict
    if change.stars is not None:
        if change.stars:
            image["stars"] = change.stars
        else:
            image.pop("stars", None)
    if change.note is not None:
        if change.note.strip():
            image["note"] = change.note
        else:
            image.pop("note", None)
    if image:
        entry["images"][str(index)] = image
    else:
        entry["images"].pop(str(index), None)
    if entry["images"]:
        jobs[key] = entry
    else:
        jobs.pop(key, None)
    return {"version": PICKS_VERSION, "manifest": picks.get("manifest", ""), "jobs": jobs}


@dataclass(frozen=True, slots=True)
class Shown:
    """An image's verdict as the viewer shows it: its own, or the one a job of the same
    name had before its spec changed (``previous`` is then True: asked again)."""

    verdict: str | None = None
    stars: int | None = None
    note: str | None = None
    previous: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"verdict": self.verdict, "stars": self.stars, "note": self.note,
                "previous": self.previous}


def _shown(image: Mapping[str, Any], previous: bool) -> Shown:
    return Shown(image.get("verdict"), image.get("stars"), image.get("note"), previous)


def keys_by_name(picks: Mapping[str, Any]) -> dict[str, list[str]]:
    """Job name → the keys that carry verdicts under it (sorted)."""
    found: dict[str, list[str]] = {}
    for key in sorted(picks.get("jobs", {})):
        found.setdefault(picks["jobs"][key]["name"], []).append(key)
    return found


def verdict_for(picks: Mapping[str, Any], key: str, name: str, index: int,
                by_name: Mapping[str, list[str]] | None = None) -> Shown:
    """What to show for image ``index`` of job ``key`` (named ``name``)."""
    jobs = picks.get("jobs", {})
    own = jobs.get(key)
    if own is not None:
        image = own["images"].get(str(index))
        return _shown(image, False) if image else Shown()
    by_name = keys_by_name(picks) if by_name is None else by_name
    for other in by_name.get(name, ()):
        image = jobs[other]["images"].get(str(index))
        if image:
            return _shown(image, True)
    return Shown()


def render_picks(picks: Mapping[str, Any]) -> str:
    """Stable text: sorted keys, two-space indent, one trailing newline."""
    return json.dumps(picks, indent=2, sort_keys=True, ensure_ascii=False,
                      allow_nan=False) + "\n"


def _check_image(path: Path, where: str, image: Any) -> None:
    if not isinstance(image, dict):
        raise ConfigError(f"{path}: {where} is not an object; fix or delete it")
    unknown = sorted(set(image) - {"verdict", "stars", "note"})
    if unknown:
        raise ConfigError(f"{path}: {where} has unknown field {unknown[0]!r}")
    try:
        Change(verdict=image.get("verdict"), stars=image.get("stars"), note=image.get("note"))
    except ConfigError as exc:
        raise ConfigError(f"{path}: {where}: {exc}") from None


def parse_picks(text: str, path: Path) -> dict[str, Any]:
    """A picks document from its text, checked; a damaged file is a ConfigError naming it."""
    try:
        picks = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}:{exc.lineno}:{exc.colno}: picks file is not valid JSON "
                          f"({exc.msg}); fix the merge or restore it from git") from None
    if (not isinstance(picks, dict) or picks.get("version") != PICKS_VERSION
            or not isinstance(picks.get("jobs"), dict)):
        raise ConfigError(f"{path}: not a version {PICKS_VERSION} seedbatch picks file")
    for key, entry in picks["jobs"].items():
        if (not isinstance(entry, dict) or not isinstance(entry.get("name"), str)
                or not isinstance(entry.get("images"), dict)):
            raise ConfigError(f"{path}: job {key[:12]}… needs a name and images")
        for index, image in entry["images"].items():
            if not str(index).isdigit():
                raise ConfigError(f"{path}: job {entry['name']}: image index {index!r} "
                                  "is not a number")
            _check_image(path, f"job {entry['name']} image {index}", image)
    return picks


def read_picks(path: str | Path, manifest_name: str | None = None) -> dict[str, Any]:
    """The picks at ``path``; an empty document when there is no file yet."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return empty_picks(manifest_name or path.name.removesuffix(PICKS_SUFFIX) + ".yaml")
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from None
    return parse_picks(text, path)


@contextlib.contextmanager
def folder_lock(folder: Path) -> Iterator[None]:
    """An exclusive ``flock`` on ``folder`` itself (no lock file is left behind)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError as exc:
        raise ConfigError(f"cannot write picks in {folder}: {exc.strerror or exc}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def update_picks(path: str | Path, change: Callable[[dict[str, Any]], dict[str, Any]],
                 manifest_name: str | None = None) -> dict[str, Any]:
    """Read the picks at ``path``, apply ``change``, write the result — all under the
    folder's lock, by atomic replace, and only when the text changed. Returns the new
    document."""
    path = Path(path)
    name = manifest_name or path.name.removesuffix(PICKS_SUFFIX) + ".yaml"
    with folder_lock(path.parent):
        old = read_picks(path, name)
        new = change(old)
        text = render_picks(new)
        if text != render_picks(old) or not path.exists():
            if not new["jobs"] and not path.exists():
                return new  # nothing to record: no empty file
            try:
                atomic_write_text(path, text)
            except OSError as exc:
                raise ConfigError(f"cannot write {path}: {exc.strerror or exc}") from None
        return new


def set_verdict(path: str | Path, key: str, name: str, index: int, change: Change,
                manifest_name: str | None = None) -> dict[str, Any]:
    """Record ``change`` for image ``index`` of job ``key``; returns the new document."""
    return update_picks(path, lambda picks: apply_change(picks, key, name, index, change),
                        manifest_name)
