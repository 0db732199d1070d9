"""The layers of runner/: every import points down (docs/architecture.md, "Layers").

Every module under runner/ is parsed with ``ast``. Each import it makes — at the top or
inside a function — must name a module of its own group or of a lower layer; groups side
by side in one layer do not import each other. A module no group claims fails too, so
that a new module is placed on purpose; so does ``importlib.import_module`` (or
``__import__``) of a project module, which hides a dependency an import statement shows.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

Group = tuple[str, tuple[str, ...]]
# Lowest layer first; a layer is one or more groups side by side. "pkg.*" is a package and
# everything in it; any other entry is one module, and wins over a package that holds it.
LAYERS: tuple[tuple[Group, ...], ...] = (
    (("core", ("runner.version", "runner.errors", "runner.jobs", "runner.resources",
               "runner.catalog", "runner.config", "runner.files", "runner.display",
               "runner.media", "runner.outputs", "runner.jobrecord", "runner.rundir",
               "runner.spec", "runner.plugins", "runner.providers.base")),),
    (("manifest", ("runner.manifest.*",)), ("providers", ("runner.providers.*",)),
     ("emulator", ("runner.emulator.*",))),
    (("hosts", ("runner.hosts.*",)),),
    (("journal", ("runner.execute.journal",)),),
    (("execute", ("runner.execute.*",)), ("report", ("runner.report.*",))),
    (("store", ("runner.store.*",)),),
    (("api", ("runner.api",)), ("testing", ("runner.testing",))),
    (("review", ("runner.review.*",)),),
    (("cli", ("runner.cli.*", "runner.__main__", "runner")),),
)


def place_of(module: str) -> tuple[int, str] | None:
    """(layer index, group name) of ``module``, or None when no group claims it."""
    best: tuple[int, int, str] | None = None  # (how specific, layer, group)
    for layer, groups in enumerate(LAYERS):
        for group, members in groups:
            for member in members:
                if member.endswith(".*"):
                    package = member[:-2]
                    if module == package or module.startswith(package + "."):
                        rank = len(package)
                    else:
                        continue
                elif module == member:
                    rank = 10_000
                else:
                    continue
                if best is None or rank > best[0]:
                    best = (rank, layer, group)
    return None if best is None else (best[1], best[2])


def module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_module(root: Path, dotted: str) -> bool:
    base = root.joinpath(*dotted.split("."))
    return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()


def imports_of(root: Path, path: Path) -> Iterator[tuple[int, str, bool]]:
    """(line, module, dynamic) for every module ``path`` imports; ``dynamic`` when it is
    named to importlib.import_module or __import__ rather than imported."""
    name = module_name(root, path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name, False
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                anchor = parts[: len(parts) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                yield node.lineno, sub if _is_module(root, sub) else base, False
        elif (isinstance(node, ast.Call) and node.args
              and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)
              and ((isinstance(node.func, ast.Attribute) and node.func.attr == "import_module")
                   or (isinstance(node.func, ast.Name)
                       and node.func.id in ("import_module", "__import__")))):
            yield node.lineno, node.args[0].value, True


def violations(root: Path, top: str = "runner") -> list[str]:
    """Every import under ``root/top`` that does not point down, and every module that no
    group claims."""
    found = []
    for path in sorted((root / top).rglob("*.py")):
        name = module_name(root, path)
        rel = path.relative_to(root).as_posix()
        mine = place_of(name)
        if mine is None:
            found.append(f"{rel}: module {name} is in no layer; add it to LAYERS in "
                         f"tests/test_layers.py and to docs/architecture.md")
            continue
        for line, target, dynamic in sorted(set(imports_of(root, path))):
            if not (target == top or target.startswith(top + ".")):
                continue
            if dynamic:
                found.append(f"{rel}:{line}: {name} loads {target} through importlib; "
                             f"import it")
                continue
            theirs = place_of(target)
            if theirs is None or theirs[0] < mine[0] or theirs[1] == mine[1]:
                continue
            where = "a higher layer" if theirs[0] > mine[0] else "a group beside it"
            found.append(f"{rel}:{line}: {name} ({mine[1]}) imports {target} ({theirs[1]}), "
                         f"{where}")
    return found


def test_every_import_points_down() -> None:
    assert violations(ROOT) == []


def test_an_import_that_points_up_is_named_with_its_line(tmp_path: Path) -> None:
    pkg = tmp_path / "runner"
    for folder in (pkg, pkg / "execute", pkg / "report"):
        folder.mkdir(exist_ok=True)
        (folder / "__init__.py").write_text("")
    (pkg / "jobs.py").write_text("import json\n")
    (pkg / "report" / "cache.py").write_text(
        "from runner.jobs import json\n"
        "from runner.execute.journal import Journal\n"
        "\n"
        "def lookup():\n"
        "    from runner.execute.executor import ReuseHit\n"
        "    return ReuseHit\n")
    (pkg / "execute" / "journal.py").write_text("from runner import jobs\n")
    (pkg / "execute" / "executor.py").write_text(
        "import importlib\n"
        "cache = importlib.import_module('runner.report.cache')\n"
        "from ..report.cache import json\n")
    (pkg / "stray.py").write_text("")
    assert violations(tmp_path) == [
        "runner/execute/executor.py:2: runner.execute.executor loads runner.report.cache "
        "through importlib; import it",
        "runner/execute/executor.py:3: runner.execute.executor (execute) imports "
        "runner.report.cache (report), a group beside it",
        "runner/report/cache.py:5: runner.report.cache (report) imports "
        "runner.execute.executor (execute), a group beside it",
        "runner/stray.py: module runner.stray is in no layer; add it to LAYERS in "
        "tests/test_layers.py and to docs/architecture.md",
    ]
    (pkg / "jobs.py").write_text("import json\n\ndef run():\n    from runner import api\n")
    (pkg / "api.py").write_text("")
    assert ("runner/jobs.py:4: runner.jobs (core) imports runner.api (api), a higher layer"
            in violations(tmp_path))


def _drawn_layers() -> tuple[tuple[Group, ...], ...]:
    text = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    block = re.search(r"<!-- layers -->\n```\n(.*?)```", text, re.S)
    assert block, "docs/architecture.md must draw the layers in a ``` block after <!-- layers -->"
    layers = []
    for line in block.group(1).splitlines():
        groups = []
        for drawn in line.split(" | "):
            name, _, members = drawn.strip().partition(" ")
            groups.append((name, tuple(m.strip() for m in members.split(",") if m.strip())))
        if groups[0][0]:
            layers.append(tuple(groups))
    return tuple(reversed(layers))


def test_the_architecture_document_draws_the_same_layers() -> None:
    assert _drawn_layers() == LAYERS


@pytest.mark.parametrize(("module", "group"), [
    ("runner", "cli"), ("runner.cli.run_cmds", "cli"), ("runner.api", "api"),
    ("runner.report.cache", "report"), ("runner.rundir", "core"), ("runner.outputs", "core"),
    ("runner.execute", "execute"), ("runner.execute.executor", "execute"),
    ("runner.execute.journal", "journal"), ("runner.emulator.app", "emulator"),
    ("runner.testing", "testing"),
])
def test_place_of(module: str, group: str) -> None:
    place = place_of(module)
    assert place is not None
    assert place[1] == group
