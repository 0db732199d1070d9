"""Read a manifest: YAML → plain Python data, with the line and column of every node.

The loader composes the YAML node graph (libyaml's ``CSafeLoader`` when available) and walks
it itself, so that it can

* record where every value and every mapping key starts, by JSON path;
* refuse what a manifest never needs and an attacker likes: anchor/alias bombs (a cap on
  the number of nodes visited), recursive aliases, deep nesting, huge files;
* refuse duplicate keys, non-string keys, unknown tags and non-finite numbers, each as a
  located :class:`~runner.errors.ManifestError`.

YAML merge keys (``<<: *defaults``) are supported; explicit keys win over merged ones.
The raw bytes are kept for the byte-exact copy in the run directory.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import yaml
from yaml.constructor import ConstructorError, SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from runner.errors import Location, ManifestError, ManifestErrors

MAX_BYTES = 4 * 1024 * 1024  # a manifest is a small text file
MAX_NODES = 250_000  # nodes visited, aliases counted every time they are followed
MAX_DEPTH = 64
MAX_TEXT = 4 * MAX_BYTES  # characters of scalar text, aliases counted every time followed

_Loader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

_STR = "tag:yaml.org,2002:str"
_MERGE = "tag:yaml.org,2002:merge"
_TIMESTAMP = "tag:yaml.org,2002:timestamp"
_PLAIN_TAGS = {
    "tag:yaml.org,2002:null", "tag:yaml.org,2002:bool", "tag:yaml.org,2002:int",
    "tag:yaml.org,2002:float", _STR,
}
_SEQ = "tag:yaml.org,2002:seq"
_MAP = "tag:yaml.org,2002:map"
_TYPE_NAMES = {
    "tag:yaml.org,2002:null": "null", "tag:yaml.org,2002:bool": "a boolean",
    "tag:yaml.org,2002:int": "an integer", "tag:yaml.org,2002:float": "a number",
}

Parts = tuple[str | int, ...]
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")


def json_path(parts: Parts) -> str:
    """``("jobs", 0, "params", "seed")`` → ``$.jobs[0].params.seed``."""
    out = ["$"]
    for part in parts:
        if isinstance(part, int):
            out.append(f"[{part}]")
        elif _IDENT.match(part):
            out.append(f".{part}")
        else:
            out.append("[" + repr(part) + "]")
    return "".join(out)


@dataclass(frozen=True)
class Pos:
    """Where a node starts (1-based) and how its text is written (YAML scalar style)."""

    line: int
    col: int
    style: str = ""  # "" plain, "'" or '"' quoted, "|" or ">" block


@dataclass
class Document:
    """A loaded manifest: its data and where every part of it was written."""

    file: str  # as the user named it, for messages
    path: Path  # absolute
    raw: bytes
    data: Any
    positions: dict[Parts, Pos] = field(default_factory=dict)  # value nodes
    key_positions: dict[Parts, Pos] = field(default_factory=dict)  # mapping keys

    @property
    def base_dir(self) -> Path:
        return self.path.parent

    @cached_property
    def _lines(self) -> list[str]:
        return self.raw.decode("utf-8-sig", errors="replace").splitlines()

    def line_text(self, line: int) -> str:
        """The text of 1-based ``line`` ("" past the end)."""
        lines = self._lines
        return lines[line - 1] if 1 <= line <= len(lines) else ""

    def pos(self, parts: Parts, *, key: bool = False) -> Pos:
        """The position of ``parts`` (its key when ``key``), else of its nearest ancestor."""
        parts = tuple(parts)
        if key and parts in self.key_positions:
            return self.key_positions[parts]
        while True:
            if parts in self.positions:
                return self.positions[parts]
            if not parts:
                return Pos(1, 1)
            parts = parts[:-1]

    def where(self, parts: Parts, *, key: bool = False) -> Location:
        p = self.pos(parts, key=key)
        return Location(self.file, p.line, p.col, json_path(tuple(parts)))

    def error(self, message: str, parts: Parts, *, key: bool = False) -> ManifestError:
        return ManifestError.at(message, self.where(parts, key=key))


def _line_col(text: str, offset: int) -> tuple[int, int]:
    before = text[:offset]
    line = before.count("\n") + 1
    col = offset - (before.rfind("\n") + 1) + 1
    return line, col


class _Walker:
    """Turns a composed node graph into plain data, recording positions."""

    def __init__(self, file: str) -> None:
        self.file = file
        self.positions: dict[Parts, Pos] = {}
        self.key_positions: dict[Parts, Pos] = {}
        self.errors: list[ManifestError] = []
        self.visited = 0
        self.text = 0  # characters of scalar text produced so far
        self.constructor = SafeConstructor()
        self.active: set[int] = set()

    def err(self, message: str, node: Node, parts: Parts) -> None:
        m = node.start_mark
        self.errors.append(ManifestError(message, self.file, m.line + 1, m.column + 1,
                                         json_path(parts)))

    def walk(self, node: Node, parts: Parts) -> Any:
        self.visited += 1
        if self.visited > MAX_NODES:
            raise _TooBig(node, parts)
        mark = node.start_mark
        style = getattr(node, "style", None) or ""
        self.positions.setdefault(parts, Pos(mark.line + 1, mark.column + 1, style))
        if len(parts) > MAX_DEPTH:
            self.err(f"nesting deeper than {MAX_DEPTH} levels", node, parts)
            return None
        if id(node) in self.active:
            self.err("recursive alias: this node contains itself", node, parts)
            return None
        if isinstance(node, ScalarNode):
            return self.scalar(node, parts)
        self.active.add(id(node))
        try:
            if isinstance(node, SequenceNode):
                if node.tag != _SEQ:
                    self.err(f"unsupported YAML tag {node.tag!r}", node, parts)
                return [self.walk(item, (*parts, i)) for i, item in enumerate(node.value)]
            if isinstance(node, MappingNode):
                if node.tag != _MAP:
                    self.err(f"unsupported YAML tag {node.tag!r}", node, parts)
                return self.mapping(node, parts)
        finally:
            self.active.discard(id(node))
        self.err("unsupported YAML node", node, parts)  # pragma: no cover - composer guarantees
        return None

    def scalar(self, node: ScalarNode, parts: Parts) -> Any:
        self.text += len(node.value)
        if self.text > MAX_TEXT:  # a long string repeated through aliases
            raise _TooBig(node, parts, f"more than {MAX_TEXT:,} characters of text")
        if node.tag == _STR:
            return node.value
        if node.tag == _TIMESTAMP:
            return node.value  # dates stay text: JSON has no date type
        if node.tag not in _PLAIN_TAGS:
            self.err(f"unsupported YAML tag {node.tag!r}; manifests hold strings, numbers, "
                     f"booleans, null, lists and mappings", node, parts)
            return None
        try:
            value = self.constructor.construct_object(node)
        except (ConstructorError, ValueError) as exc:  # pragma: no cover - resolver-checked
            self.err(f"bad scalar {node.value!r}: {exc}", node, parts)
            return None
        if isinstance(value, float) and not math.isfinite(value):
            self.err(f"{node.value!r} is not a finite number", node, parts)
            return None
        return value

    def _pairs(self, node: MappingNode, parts: Parts,
               depth: int = 0) -> tuple[list[tuple[Node, Node]], list[tuple[Node, Node]]]:
        """(explicit pairs, pairs merged in with ``<<``, earlier sources first)."""
        explicit: list[tuple[Node, Node]] = []
        merged: list[tuple[Node, Node]] = []
        for key_node, value_node in node.value:
            if key_node.tag != _MERGE:
                explicit.append((key_node, value_node))
                continue
            sources = value_node.value if isinstance(value_node, SequenceNode) else [value_node]
            for source in sources:
                if not isinstance(source, MappingNode):
                    self.err("a merge key (<<) takes a mapping or a list of mappings",
                             source, parts)
                    continue
                if id(source) in self.active or depth > MAX_DEPTH:
                    self.err("recursive merge key (<<)", source, parts)
                    continue
                self.active.add(id(source))
                try:
                    inner, inner_merged = self._pairs(source, parts, depth + 1)
                finally:
                    self.active.discard(id(source))
                merged.extend(inner)
                merged.extend(inner_merged)
                self.visited += len(inner) + len(inner_merged)
                if self.visited > MAX_NODES:
                    raise _TooBig(source, parts)
        return explicit, merged

    def mapping(self, node: MappingNode, parts: Parts) -> dict[str, Any]:
        out: dict[str, Any] = {}
        seen: dict[str, Node] = {}
        explicit, merged = self._pairs(node, parts)
        for key_node, value_node in explicit:
            if not isinstance(key_node, ScalarNode):
                self.err("a mapping key must be a plain string, not a list or mapping",
                         key_node, parts)
                continue
            if key_node.tag != _STR:
                kind = _TYPE_NAMES.get(key_node.tag, key_node.tag)
                self.err(f"key {key_node.value!r} is read as {kind}, not a string; quote it: "
                         f"\"{key_node.value}\":", key_node, parts)
                continue
            key = key_node.value
            child = (*parts, key)
            if key in seen:
                first = seen[key].start_mark.line + 1
                self.err(f"duplicate key {key!r} (first defined on line {first})",
                         key_node, child)
                continue
            seen[key] = key_node
            km = key_node.start_mark
            self.key_positions[child] = Pos(km.line + 1, km.column + 1)
            out[key] = self.walk(value_node, child)
        for key_node, value_node in merged:
            if not isinstance(key_node, ScalarNode) or key_node.tag != _STR:
                self.err("a mapping key must be a string", key_node, parts)
                continue
            key = key_node.value
            if key in seen:  # explicit keys and earlier merge sources win
                continue
            seen[key] = key_node
            child = (*parts, key)
            km = key_node.start_mark
            self.key_positions[child] = Pos(km.line + 1, km.column + 1)
            out[key] = self.walk(value_node, child)
        return out


class _TooBig(Exception):
    def __init__(self, node: Node, parts: Parts, what: str = "") -> None:
        self.node = node
        self.parts = parts
        self.what = what or f"more than {MAX_NODES:,} YAML nodes"


def parse(text: str, file: str, path: Path, raw: bytes) -> Document:
    """YAML text → :class:`Document`; raises :class:`ManifestErrors` with every problem."""
    try:
        node = yaml.compose(text, Loader=_Loader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        problem = exc.problem or "invalid YAML"
        context = f" {exc.context}" if exc.context else ""
        if exc.context and exc.context_mark and mark and exc.context_mark.line != mark.line:
            context += f" that starts on line {exc.context_mark.line + 1}"
        if exc.context == "expected a single document in the stream":
            message = ("a manifest is a single document, but a second YAML document starts "
                       "here (remove the '---' line, or split the file)")
        elif problem.startswith("but ") and context:  # "expected X, but found Y"
            message = f"{context.strip()}, {problem}"
        else:
            message = f"{problem}{context}"
        raise ManifestErrors([ManifestError(f"YAML syntax error: {message}",
                                            file, line, col)]) from None
    except yaml.reader.ReaderError as exc:
        line, col = _line_col(text, exc.position)
        code = exc.character if isinstance(exc.character, int) else ord(exc.character)
        raise ManifestErrors([ManifestError(
            f"YAML syntax error: character U+{code:04X} is not allowed ({exc.reason})",
            file, line, col)]) from None
    except yaml.YAMLError as exc:  # pragma: no cover - every libyaml error is marked
        raise ManifestErrors([ManifestError(f"YAML syntax error: {exc}", file)]) from None
    except RecursionError:
        raise ManifestErrors([ManifestError("YAML nested too deeply", file)]) from None
    if node is None:
        raise ManifestErrors([ManifestError(
            "the manifest is empty; it needs at least `version: 1` and `jobs:`", file)])
    walker = _Walker(file)
    try:
        data = walker.walk(node, ())
    except _TooBig as big:
        m = big.node.start_mark
        raise ManifestErrors([ManifestError(
            f"the manifest expands to {big.what} (an anchor/alias bomb?); refusing to read "
            f"further", file, m.line + 1, m.column + 1,
            json_path(big.parts))]) from None
    except RecursionError:
        raise ManifestErrors([ManifestError("YAML nested too deeply", file)]) from None
    if walker.errors:
        raise ManifestErrors(walker.errors)
    if not isinstance(node, MappingNode):
        raise ManifestErrors([ManifestError(
            "the manifest must be a mapping of keys (version:, jobs:, …), not a "
            + ("list" if isinstance(node, SequenceNode) else "single value"),
            file, node.start_mark.line + 1, node.start_mark.column + 1)])
    return Document(file, path, raw, data, walker.positions, walker.key_positions)


def read_document(path: str | Path, *, display: str | None = None) -> Document:
    """Read and parse the manifest at ``path``; every problem raises :class:`ManifestErrors`."""
    file = display if display is not None else str(path)
    p = Path(path)
    try:
        size = p.stat().st_size
    except FileNotFoundError:
        raise ManifestErrors([ManifestError("no such file", file)]) from None
    except OSError as exc:
        raise ManifestErrors([ManifestError(f"cannot read: {exc.strerror}", file)]) from None
    if p.is_dir():
        raise ManifestErrors([ManifestError("this is a folder, not a manifest file", file)])
    if size > MAX_BYTES:
        raise ManifestErrors([ManifestError(
            f"the file is {size / 1048576:.1f} MiB; a manifest may be at most "
            f"{MAX_BYTES // 1048576} MiB (use a matrix instead of listing jobs one by one)",
            file)])
    try:
        with p.open("rb") as fh:  # bounded: a pipe or a device has no size to check first
            raw = fh.read(MAX_BYTES + 1)
    except OSError as exc:
        raise ManifestErrors([ManifestError(f"cannot read: {exc.strerror}", file)]) from None
    if len(raw) > MAX_BYTES:  # grew while we looked, or a stream that goes on
        raise ManifestErrors([ManifestError(
            f"a manifest may be at most {MAX_BYTES // 1048576} MiB", file)])
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        head = raw[: exc.start]
        line = head.count(b"\n") + 1
        col = len(head) - (head.rfind(b"\n") + 1) + 1
        raise ManifestErrors([ManifestError(
            f"not UTF-8 text: byte 0x{raw[exc.start]:02x} cannot be decoded; save the "
            f"manifest as UTF-8", file, line, col)]) from None
    return parse(text, file, p.resolve(), raw)


def parse_text(text: str, file: str = "<manifest>", base_dir: str | Path = ".") -> Document:
    """Parse manifest text that has no file (tests, tools); paths resolve from ``base_dir``."""
    return parse(text, file, (Path(base_dir) / "manifest.yaml").resolve(),
                 text.encode("utf-8"))
