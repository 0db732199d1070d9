"""End to end over a real loopback socket: the emulator, the real provider clients, the
executor, the run directory."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from execute_support import E2E, MIXED, env_for, simple_manifest, write, write_refs

from runner import api
from runner.emulator import EmulatorConfig, FaultSpec, serve_in_thread
from runner.emulator.faults import expected_faults
from runner.execute.journal import JobState, Journal

pytestmark = pytest.mark.e2e


@pytest.fixture
def emulator(request: pytest.FixtureRequest) -> Iterator[object]:
    cfg = getattr(request, "param", None) or EmulatorConfig(latency=0.3)
    with serve_in_thread(cfg) as server:
        yield server


def _check_outputs(run_dir: Path) -> int:
    with Journal.open(run_dir / "journal.sqlite") as journal:
        outs = journal.outputs()
        for out in outs:
            data = (run_dir / out.path).read_bytes()
            assert hashlib.sha256(data).hexdigest() == out.sha256
            assert len(data) == out.bytes
            assert out.content_type == "image/png"
            assert out.width
            assert out.height
        return len(outs)


@pytest.mark.parametrize("emulator", [EmulatorConfig(latency=0.3, seed=11,
                                                     faults=FaultSpec.parse("fail=0.25"))],
                         indirect=True)
def test_mixed_manifest_every_model_local_and_remote_references(tmp_path: Path,
                                                                 emulator: object) -> None:
    write_refs(tmp_path)
    manifest = write(tmp_path, "mixed.yaml", MIXED)
    result = api.run(manifest, runs_dir=tmp_path / "runs", env=env_for(emulator), options=E2E)
    stats = emulator.stats()  # type: ignore[attr-defined]
    run_dir = result.run_dir
    assert result.failed == stats["tasks_failed"] >= 1  # the emulator's fail fault, seeded
    assert result.succeeded == 10 - result.failed
    assert result.exit_code == 1
    assert stats["tasks_created_total"] == 10
    assert stats["duplicate_paid"] == 0
    assert set(stats["tasks_created"]) == {"wiro", "pixwith"}
    assert len(stats["tasks_created"]["wiro"]) == 3  # all three Wiro models
    assert stats["uploads"] >= 1  # Pixwith's local reference went up first
    assert _check_outputs(run_dir) == result.succeeded == result.images
    assert (run_dir / "manifest.yaml").read_bytes() == manifest.read_bytes()
    plan = json.loads((run_dir / "plan.json").read_text())
    assert len(plan["jobs"]) == 10
    with Journal.open(run_dir / "journal.sqlite") as journal:
        meta = journal.meta()
        assert meta["base_urls"]["wiro"] == emulator.wiro_base_url  # type: ignore[attr-defined]
        for rec in journal.jobs(JobState.FAILED):
            assert rec.task_state == "failed"
            assert "task failed" in (rec.error or "")
            assert rec.cost_usd in (None, 0.0)
    assert "demo-wiro-secret" not in (run_dir / "journal.sqlite").read_bytes().decode("latin-1")
    assert result.spent_usd == pytest.approx(stats["billed_usd"])
    assert result.spent_credits == stats["billed_credits"]


@pytest.mark.parametrize("emulator", [EmulatorConfig(latency=0.25, concurrency=2)],
                         indirect=True)
def test_a_provider_limit_below_the_manifests_is_waited_out(tmp_path: Path,
                                                            emulator: object) -> None:
    manifest = write(tmp_path, "m.yaml", simple_manifest(10, concurrency=8))
    result = api.run(manifest, runs_dir=tmp_path / "runs", env=env_for(emulator), options=E2E)
    stats = emulator.stats()  # type: ignore[attr-defined]
    assert result.exit_code == 0
    assert result.succeeded == 10
    # However many code-96 refusals the timing brings (tests/chaos forces some), each one
    # cost exactly one more submit attempt and never an extra task.
    refused = stats["concurrency_refusals"].get("wiro", 0)
    with Journal.open(result.run_dir / "journal.sqlite") as journal:
        assert sum(r.attempts for r in journal.jobs()) == 10 + refused
    assert stats["inflight_tasks_peak"]["wiro"] <= 2
    assert stats["tasks_created_total"] == 10
    assert stats["duplicate_paid"] == 0


FAULTS = "429=0.15,5xx=0.1,drop=0.06,truncate=0.25"


@pytest.mark.parametrize("emulator", [EmulatorConfig(latency=0.25, seed=3,
                                                     faults=FaultSpec.parse(FAULTS))],
                         indirect=True)
def test_faults_everything_recoverable_is_delivered_and_nothing_paid_twice(
        tmp_path: Path, emulator: object) -> None:
    write_refs(tmp_path)
    manifest = write(tmp_path, "mixed.yaml", MIXED.replace("[tent, boots]",
                                                           "[tent, boots, lamp]"))
    # At these rates a third of downloads fail: allow more tries than the default.
    opts = replace(E2E, download_attempts=10)
    result = api.run(manifest, runs_dir=tmp_path / "runs", env=env_for(emulator), options=opts)
    stats = emulator.stats()  # type: ignore[attr-defined]
    # The faults met are exactly what the seed gives the decisions made, and at least what
    # it gives the 15 submits any run makes (each kind alone, at high rates: tests/chaos).
    assert stats["faults"] == dict(expected_faults(FAULTS, 3, stats["fault_decisions"]))
    floor = expected_faults(FAULTS, 3, {"api": 15})
    assert sum(floor.values()) > 0
    assert all(stats["faults"][k] >= n for k, n in floor.items())
    assert stats["duplicate_paid"] == 0
    assert result.failed == 0
    # A submit whose connection dropped has an unknown outcome: reported, never resent.
    assert result.succeeded + result.unknown == 15
    assert result.succeeded <= stats["tasks_created_total"] <= 15
    assert _check_outputs(result.run_dir) == result.succeeded
    if result.unknown:
        assert any("--retry-unknown" in m for m in result.messages)
        # The user accepts the risk: the unknown jobs are sent again.
        emulator.set_faults("none")  # type: ignore[attr-defined]
        again = api.resume(result.run_dir, retry_unknown=True, env=env_for(emulator),
                           options=opts)
        assert again.succeeded == 15
        stats = emulator.stats()  # type: ignore[attr-defined]
        # Exactly the lost-but-created ones were paid twice: the accepted risk.
        assert stats["duplicate_paid"] == stats["tasks_created_total"] - 15


def test_budget_cap_then_resume_with_more(tmp_path: Path, emulator: object) -> None:
    manifest = write(tmp_path, "m.yaml", simple_manifest(5, concurrency=4))
    env = env_for(emulator)
    result = api.run(manifest, runs_dir=tmp_path / "runs", env=env, options=E2E,
                     max_usd=0.07)
    stats = emulator.stats()  # type: ignore[attr-defined]
    assert result.succeeded == 2
    assert result.pending == 3
    assert result.exit_code == 1
    assert stats["billed_usd"] <= 0.07
    assert any("budget" in m for m in result.messages)
    # Resume keeps the run's --max-usd: nothing more fits.
    same = api.resume(result.run_dir, env=env, options=E2E)
    assert same.succeeded == 2
    more = api.resume(result.run_dir, env=env, options=E2E, max_usd=1.0)
    assert more.succeeded == 5
    assert more.exit_code == 0
    assert emulator.stats()["tasks_created_total"] == 5  # type: ignore[attr-defined]


def test_manifest_budget_in_credits(tmp_path: Path, emulator: object) -> None:
    text = simple_manifest(4, model="pixwith/seedream-4.5",
                           params='{resolution: 2K, aspect_ratio: "1:1"}',
                           budget="budget: {max_credits: 12}\n")
    manifest = write(tmp_path, "m.yaml", text)
    result = api.run(manifest, runs_dir=tmp_path / "runs", env=env_for(emulator), options=E2E)
    assert result.succeeded == 2
    assert result.spent_credits == 12
    assert emulator.stats()["billed_credits"] == 12  # type: ignore[attr-defined]


def test_in_process_emulation_and_transport_injection(tmp_path: Path) -> None:
    import httpx

    from runner.emulator import create_app

    manifest = write(tmp_path, "m.yaml", simple_manifest(3))
    app = create_app(EmulatorConfig(latency=0.1))
    result = api.run(manifest, emulate=True, runs_dir=tmp_path / "runs", env={},
                     transport=httpx.ASGITransport(app=app), options=E2E)
    assert result.succeeded == 3
    # A second rehearsal finds every output in the first: nothing is submitted, nothing
    # needs credentials.
    cached = api.run(manifest, emulate=True, runs_dir=tmp_path / "runs", env={}, options=E2E,
                     transport=httpx.ASGITransport(app=app))
    assert cached.counts["reused"] == 3
    assert cached.exit_code == 0
    # A real run reuses none of them: it needs credentials to submit every job.
    from runner.errors import ConfigError

    with pytest.raises(ConfigError, match="WIRO_API_KEY"):
        api.run(manifest, runs_dir=tmp_path / "runs", env={}, options=E2E)
    with Journal.open(result.run_dir / "journal.sqlite") as journal:
        assert journal.meta()["emulate"] == "in-process"
    # Served on a real loopback socket by the run itself:
    served = api.run(manifest, emulate=True, emulate_latency=0.1, runs_dir=tmp_path / "runs",
                     env={}, options=E2E, force=True)
    assert served.counts["reused"] == 0
    assert served.succeeded == 3
    assert served.run_dir != result.run_dir
    # Its emulator died with it: resuming needs a fresh one or an external one.
    with Journal.open(served.run_dir / "journal.sqlite") as journal:
        journal.set_state(journal.jobs()[0].key, JobState.PENDING)
    with pytest.raises(ConfigError, match="seedbatch emulate"):
        api.resume(served.run_dir, env={}, options=E2E)
    again = api.resume(served.run_dir, env={}, emulate=True, emulate_latency=0.1, options=E2E)
    assert again.succeeded == 3


def test_missing_credentials_stop_before_anything(tmp_path: Path) -> None:
    from runner.errors import ConfigError

    manifest = write(tmp_path, "m.yaml", simple_manifest(2))
    with pytest.raises(ConfigError, match="WIRO_API_KEY"):
        api.run(manifest, runs_dir=tmp_path / "runs", env={"WIRO_API_SECRET": "x"})
    assert not (tmp_path / "runs").exists()


def test_a_stale_cancel_request_does_not_cancel_a_resume(tmp_path: Path,
                                                         emulator: object) -> None:
    manifest = write(tmp_path, "m.yaml", simple_manifest(2))
    env = env_for(emulator)
    first = api.run(manifest, runs_dir=tmp_path / "runs", env=env, options=E2E, max_usd=0.03)
    assert first.pending == 1
    with Journal.open(first.run_dir / "journal.sqlite") as journal:
        journal.set_meta("cancel_requested", "2020-01-01T00:00:00.000Z")  # its process is gone
    again = api.resume(first.run_dir, env=env, options=E2E, max_usd=1.0)
    assert again.succeeded == 2
    assert not again.interrupted
