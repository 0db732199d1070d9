"""The shared output store: objects by content, one small record per job and run.

Layout under the store's root (any fsspec URL, or a plain path)::

    objects/sha256/<2 hex>/<62 hex>          an output's bytes, named by their sha256
    jobs/<job key>/<made at>--<run id>.json  what one run made for one job (a StoreRecord)

* An object is written once and never overwritten: it is created only if absent (a
  temporary file hard-linked into place on a local disk; a conditional ``If-None-Match``
  PUT on S3; elsewhere a temporary name moved into place). Readers never see part of one,
  and every read is checked against its name: a damaged object is never served.
* A job's records are one file per run, named by when the outputs were made (UTC, to the
  microsecond) and the run's id. Writers never read-modify-write a shared file, so many
  machines may write at once without losing a record; the newest name wins.
* Emulated outputs never enter a store (a record says ``"emulated": false`` and the
  readers skip any that says otherwise).

Backend credentials come from the backend's own environment or configuration (``AWS_*``,
``GOOGLE_APPLICATION_CREDENTIALS``, ``AZURE_STORAGE_*``, fsspec's ``FSSPEC_<PROTOCOL>_*``):
a store URL carrying a password is refused, and a URL is shown (:func:`shown`) without
user, query or fragment.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import uuid
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from runner.errors import ConfigError, StoreError
from runner.version import __version__

STORE_VAR = "SEEDBATCH_STORE"
RECORD_FORMAT = 1
OBJECTS_DIR = "objects/sha256"
JOBS_DIR = "jobs"
_SHA = re.compile(r"^[0-9a-f]{64}$")
# URL scheme → the extra that installs its fsspec backend
EXTRAS = {"s3": "s3", "s3a": "s3", "gs": "gs", "gcs": "gs", "az": "az", "abfs": "az",
          "abfss": "az"}


# -- where the store is -----------------------------------------------------------------------

def is_url(location: str) -> bool:
    return bool(re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", location))


def shown(location: str) -> str:
    """A store location as it may be printed or recorded: no user, password, query or
    fragment (where a backend might carry a secret)."""
    if not is_url(location):
        return location
    parts = urlsplit(location)
    host = parts.hostname or ""
    if parts.port:
        host += f":{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def check_location(location: str, where: str) -> str:
    """``location`` if it carries no credentials; ConfigError naming ``where`` otherwise."""
    if is_url(location):
        parts = urlsplit(location)
        if parts.password is not None or parts.username is not None:
            raise ConfigError(
                f"{where}: the store URL {shown(location)!r} carries credentials; they never "
                f"belong in a URL. Give them to the backend the usual way (for S3: "
                f"AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or ~/.aws; see docs/store.md)")
    return location


def store_location(flag: str | None, env: Mapping[str, str],
                   manifest_store: str | None) -> str | None:
    """Where the store is: ``--store`` > ``SEEDBATCH_STORE`` > the manifest's ``store:``
    (already made absolute against the manifest's folder); None when none says. A relative
    path given by the flag or the environment is relative to the working directory."""
    for value, where in ((flag, "--store"), (env.get(STORE_VAR), STORE_VAR),
                         (manifest_store, "store:")):
        if value:
            check_location(value, where)
            return value if is_url(value) else str(Path(value).expanduser().resolve())
    return None


def open_store_for(flag: str | None, env: Mapping[str, str],
                   manifest_store: str | None) -> Store | None:
    """The store a command uses: ``--store`` > ``SEEDBATCH_STORE`` > the manifest's."""
    location = store_location(flag, env, manifest_store)
    return open_store(location) if location else None


def open_store(location: str, storage_options: Mapping[str, Any] | None = None) -> Store:
    """A :class:`Store` at ``location`` (an fsspec URL or a path). An unknown scheme, or
    one whose backend is not installed, is a ConfigError that says what to install."""
    import fsspec.core

    check_location(location, "store")
    try:
        fs, root = fsspec.core.url_to_fs(location, **dict(storage_options or {}))
    except ImportError as exc:
        scheme = urlsplit(location).scheme.lower()
        extra = EXTRAS.get(scheme)
        hint = (f"pip install 'seedbatch[{extra}]'" if extra else
                f"install the fsspec backend for {scheme}://")
        raise ConfigError(f"store {shown(location)}: its backend is not installed ({exc}); "
                          f"{hint}") from None
    except ValueError as exc:
        raise ConfigError(f"store {shown(location)}: {exc} (a path, file://, s3://, gs:// "
                          f"or az://; see docs/store.md)") from None
    return Store(fs, str(root).rstrip("/") or "/", shown(location))


# -- what a record says -----------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class StoredOutput:
    index: int
    sha256: str
    bytes: int
    content_type: str
    width: int | None = None
    height: int | None = None


@dataclass(frozen=True, slots=True)
class StoreRecord:
    """What one run made for one job: enough to place its outputs and say who paid."""

    key: str
    name: str
    model: str
    provider: str  # the host
    run_id: str
    outputs: tuple[StoredOutput, ...]
    made_at: str  # when the outputs were made (UTC ISO 8601): orders a key's records
    task_id: str | None = None
    cost_usd: float | None = None
    credits: float | None = None
    seedbatch: str = __version__
    emulated: bool = False
    format: int = RECORD_FORMAT
    extra: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> bytes:
        doc = asdict(self)
        doc.pop("extra")
        doc["outputs"] = [asdict(o) for o in self.outputs]
        return (json.dumps(doc, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode()

    @classmethod
    def from_json(cls, data: bytes) -> StoreRecord:
        doc = json.loads(data)
        if not isinstance(doc, dict) or doc.get("format") != RECORD_FORMAT:
            raise ValueError("not a version 1 seedbatch store record")
        outputs = tuple(StoredOutput(int(o["index"]), str(o["sha256"]), int(o["bytes"]),
                                     str(o["content_type"]), o.get("width"), o.get("height"))
                        for o in doc["outputs"])
        if not outputs or any(not _SHA.match(o.sha256) for o in outputs):
            raise ValueError("a record without valid outputs")
        return cls(key=str(doc["key"]), name=str(doc["name"]), model=str(doc["model"]),
                   provider=str(doc["provider"]), run_id=str(doc["run_id"]), outputs=outputs,
                   made_at=str(doc["made_at"]), task_id=doc.get("task_id"),
                   cost_usd=doc.get("cost_usd"), credits=doc.get("credits"),
                   seedbatch=str(doc.get("seedbatch", "")),
                   emulated=bool(doc.get("emulated", False)))

    @property
    def file_name(self) -> str:
        """``<made at, compact>--<run id>.json``: names sort oldest to newest."""
        try:
            when = datetime.fromisoformat(self.made_at.replace("Z", "+00:00")).astimezone(UTC)
            stamp = when.strftime("%Y%m%dT%H%M%S.%fZ")
        except ValueError:
            stamp = "00000000T000000.000000Z"
        run = re.sub(r"[^A-Za-z0-9._-]", "_", self.run_id)
        return f"{stamp}--{run}.json"


# -- the store --------------------------------------------------------------------------------

def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class Store:
    """A store on an fsspec filesystem. Every method is safe to call from many threads;
    every failure of the backend is raised as :class:`StoreError`."""

    def __init__(self, fs: Any, root: str, url: str) -> None:
        from fsspec.implementations.local import LocalFileSystem

        self.fs = fs
        self.root = root
        self.url = url  # as shown: never a secret
        self.local = isinstance(fs, LocalFileSystem)

    def __repr__(self) -> str:
        return f"Store({self.url!r})"

    # paths
    def object_path(self, sha256: str) -> str:
        if not _SHA.match(sha256):
            raise StoreError(f"not a sha256: {sha256!r}")
        return f"{self.root}/{OBJECTS_DIR}/{sha256[:2]}/{sha256[2:]}"

    def record_dir(self, key: str) -> str:
        if not re.match(r"^[0-9a-f]{16,128}$", key):
            raise StoreError(f"not a job key: {key!r}")
        return f"{self.root}/{JOBS_DIR}/{key}"

    # writing
    def _create(self, path: str, data: bytes) -> bool:
        """Create ``path`` holding ``data`` unless it exists; True when written here."""
        if self.local:
            return _create_local(Path(path), data)
        try:
            self.fs.pipe_file(path, data, mode="create")
            return True
        except FileExistsError:
            return False
        except (TypeError, ValueError, NotImplementedError):
            pass  # no conditional create here: a temporary name, then a move
        if self.fs.exists(path):
            return False
        parent, _, name = path.rpartition("/")
        tmp = f"{parent}/.{name}.{uuid.uuid4().hex}.tmp"
        self.fs.pipe_file(tmp, data)
        try:
            self.fs.mv(tmp, path)
        finally:
            with contextlib.suppress(Exception):
                if self.fs.exists(tmp):
                    self.fs.rm_file(tmp)
        return True

    def put_object(self, data: bytes, sha256: str) -> bool:
        """Store ``data`` under its sha256 (checked here); True when it was not there."""
        if _digest(data) != sha256:
            raise StoreError(f"refused to store {sha256[:12]}…: the bytes hash differently")
        path = self.object_path(sha256)
        try:
            if not self.local and self.fs.exists(path):
                return False
            return self._create(path, data)
        except StoreError:
            raise
        except Exception as exc:
            raise StoreError(f"{self.url}: could not write object {sha256[:12]}…: "
                             f"{_why(exc)}") from exc

    def has_object(self, sha256: str) -> bool:
        try:
            return bool(self.fs.exists(self.object_path(sha256)))
        except StoreError:
            raise
        except Exception as exc:
            raise StoreError(f"{self.url}: {_why(exc)}") from exc

    def get_object(self, sha256: str) -> bytes:
        """The object's bytes, checked against its name (a damaged one is an error)."""
        path = self.object_path(sha256)
        try:
            data: bytes = self.fs.cat_file(path)
        except FileNotFoundError:
            raise StoreError(f"{self.url}: object {sha256[:12]}… is missing") from None
        except Exception as exc:
            raise StoreError(f"{self.url}: could not read object {sha256[:12]}…: "
                             f"{_why(exc)}") from exc
        if _digest(data) != sha256:
            raise StoreError(f"{self.url}: object {sha256[:12]}… is damaged (its bytes hash "
                             f"differently); it is not used")
        return data

    def put_record(self, record: StoreRecord) -> bool:
        """Add ``record`` (never replaces another run's); True when it was not there."""
        if record.emulated:
            raise StoreError("emulated outputs never enter a store")
        path = f"{self.record_dir(record.key)}/{record.file_name}"
        try:
            return self._create(path, record.to_json())
        except Exception as exc:
            raise StoreError(f"{self.url}: could not write the record of {record.name}: "
                             f"{_why(exc)}") from exc

    # reading
    def record_names(self, key: str) -> list[str]:
        """The key's record files, oldest first."""
        folder = self.record_dir(key)
        try:
            listed = self.fs.ls(folder, detail=False)
        except FileNotFoundError:
            return []
        except Exception as exc:
            raise StoreError(f"{self.url}: could not list {JOBS_DIR}/{key}: {_why(exc)}") \
                from exc
        names = [str(p).rstrip("/").rpartition("/")[2] for p in listed]
        return sorted(n for n in names if n.endswith(".json") and not n.startswith("."))

    def records(self, key: str) -> list[StoreRecord]:
        """Every readable record of ``key``, oldest first (unreadable ones passed over)."""
        found = []
        for name in self.record_names(key):
            record = self._read_record(f"{self.record_dir(key)}/{name}")
            if record is not None:
                found.append(record)
        return found

    def newest(self, key: str) -> StoreRecord | None:
        """The newest readable, real record of ``key``: newest wins."""
        for name in reversed(self.record_names(key)):
            record = self._read_record(f"{self.record_dir(key)}/{name}")
            if record is not None and record.key == key and not record.emulated:
                return record
        return None

    def newest_many(self, keys: Iterable[str], workers: int = 16,
                    ) -> dict[str, StoreRecord | None]:
        """:meth:`newest` for many keys at once (``workers`` requests in flight)."""
        unique = list(dict.fromkeys(keys))
        if self.local or len(unique) < 4:
            return {key: self.newest(key) for key in unique}
        with ThreadPoolExecutor(max_workers=workers) as pool:
            return dict(zip(unique, pool.map(self.newest, unique), strict=True))

    def _read_record(self, path: str) -> StoreRecord | None:
        try:
            return StoreRecord.from_json(self.fs.cat_file(path))
        except FileNotFoundError:
            return None
        except (ValueError, KeyError, TypeError):
            return None  # not a record (or a damaged one): passed over
        except Exception as exc:
            raise StoreError(f"{self.url}: could not read {path}: {_why(exc)}") from exc


def _create_local(path: Path, data: bytes) -> bool:
    """Create-if-absent on a local disk: a complete temporary file, hard-linked into
    place (a link never replaces an existing name), then removed."""
    if path.exists():
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{uuid.uuid4().hex}.tmp"
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        except OSError:  # a filesystem without hard links: an atomic rename instead
            if path.exists():
                return False
            os.replace(tmp, path)
        return True
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def _why(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text if len(text) <= 300 else text[:299] + "…"


def record_for(key: str, name: str, model: str, provider: str, run_id: str,
               outputs: Sequence[StoredOutput], made_at: str | None, *,
               task_id: str | None = None, cost_usd: float | None = None,
               credits: float | None = None) -> StoreRecord:
    return StoreRecord(key=key, name=name, model=model, provider=provider, run_id=run_id,
                       outputs=tuple(outputs), made_at=made_at or _now(), task_id=task_id,
                       cost_usd=cost_usd, credits=credits)


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
