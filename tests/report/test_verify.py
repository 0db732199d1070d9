"""verify: an intact run passes; a changed, a deleted output and a changed manifest fail."""

from __future__ import annotations

import json

import pytest

from runner.errors import RunDirError
from runner.report.verify import load_report, verify_run


def test_intact_run_passes(finished_run) -> None:
    result = verify_run(finished_run.run_dir)
    assert result.intact
    assert result.checked == 12  # eleven outputs and the manifest copy


def test_changed_and_deleted_outputs_are_caught(finished_run) -> None:
    run_dir = finished_run.run_dir
    changed = run_dir / "outputs/boots-golden-hour-v4/0.png"
    changed.write_bytes(changed.read_bytes() + b"tampered")
    deleted = run_dir / "outputs/tent-golden-hour-v4/1.png"
    deleted.unlink()
    result = verify_run(run_dir)
    assert not result.intact
    assert result.checked == 12
    by_path = {p.path: p for p in result.problems}
    assert set(by_path) == {"outputs/boots-golden-hour-v4/0.png",
                            "outputs/tent-golden-hour-v4/1.png"}
    report = json.loads((run_dir / "report.json").read_text())
    expected = {o["path"]: o for j in report["jobs"] for o in j["outputs"]}
    c = by_path["outputs/boots-golden-hour-v4/0.png"]
    assert c.kind == "changed"
    assert c.expected_sha256 == expected[c.path]["sha256"]
    assert c.actual_bytes == expected[c.path]["bytes"] + len(b"tampered")
    assert c.actual_sha256 != c.expected_sha256
    assert "expected sha256" in c.describe()
    d = by_path["outputs/tent-golden-hour-v4/1.png"]
    assert d.kind == "missing"
    assert d.actual_sha256 is None
    assert d.describe().startswith("missing")


def test_manifest_copy_is_verified(finished_run) -> None:
    manifest = finished_run.run_dir / "manifest.yaml"
    manifest.write_text(manifest.read_text() + "# edited\n")
    result = verify_run(finished_run.run_dir)
    assert [(p.path, p.kind) for p in result.problems] == [("manifest.yaml", "changed")]


def test_not_a_run_directory(tmp_path) -> None:
    with pytest.raises(RunDirError, match=r"no report\.json here; pass a folder under runs/"):
        load_report(tmp_path)
    with pytest.raises(RunDirError, match="no such run directory"):
        load_report(tmp_path / "absent")
    (tmp_path / "report.json").write_text("{")
    with pytest.raises(RunDirError, match="not valid JSON"):
        load_report(tmp_path)
