"""A synthetic run: a 3 × 2 matrix across two models, with every kind of outcome."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from runner.jobrecord import job_to_dict
from runner.jobs import Estimate, ImageRef, Job
from runner.outputs import OutputRecord
from runner.report.records import JobRecord, JobStatus, RunMeta, RunRecords

ENVIRONMENT = {
    "python": "3.11.9",
    "implementation": "CPython",
    "platform": "linux",
    "libraries": {name: "1.0" for name in ("httpx", "jinja2", "jsonschema", "pyyaml", "pillow",
                                           "click", "rich", "aiolimiter", "stamina")},
}

MANIFEST = """\
version: 1
name: autumn-hero
matrix:
  product: [tent, boots, lamp]
  light: [golden hour, overcast]
models:
  v4: {model: wiro/seedream-v4, params: {size: 2048x2048}}
  pix: {model: pixwith/seedream-4.5, params: {resolution: 2K}}
jobs:
  - name: "{{ product }}-{{ light | slug }}-{{ model.alias }}"
    model: [v4, pix]
    prompt: "Acme {{ product }} at {{ light }}"
"""

SCRIPT_PROMPT = 'Acme lamp at <script>alert("x")</script> & "dusk" <b>bold</b>'
PREVIOUS_RUN = "20250101T000000Z-autumn-hero-prev01"

COLOURS = [(220, 80, 60), (60, 140, 220), (70, 170, 90), (230, 180, 40), (150, 80, 200),
           (40, 180, 180), (200, 100, 150), (120, 120, 120)]


def key_of(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()


def write_image(path: Path, colour: tuple[int, int, int], size: tuple[int, int] = (96, 64),
                fmt: str = "PNG") -> OutputRecord:
    """A small real image with a visible pattern; returns its record (relative path later)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.new("RGB", size, colour)
    for x in range(0, size[0], 8):
        for y in range(0, size[1], 8):
            if (x + y) // 8 % 2:
                image.putpixel((x, y), (255, 255, 255))
    image.save(path, format=fmt)
    data = path.read_bytes()
    return OutputRecord(job_key="", index=0, path=str(path), url=None, bytes=len(data),
                        sha256=hashlib.sha256(data).hexdigest(),
                        content_type=f"image/{fmt.lower()}", width=size[0], height=size[1])


@dataclass
class SyntheticRun:
    run_dir: Path
    manifest: Path  # the original manifest (the lockfile goes beside it)
    records: RunRecords

    def job(self, name: str) -> JobRecord:
        return next(j for j in self.records.jobs if j.name == name)


def make_run(root: Path, run_id: str = "20250301T101500Z-autumn-hero-abc123",
             outcomes: dict[str, Any] | None = None) -> SyntheticRun:
    """Write images and manifest copy under ``root/runs/<run_id>`` and return the records.

    Outcomes: tent-overcast-v4 reused, boots-overcast-pix failed, lamp-golden-hour-v4
    unknown, lamp-overcast-pix pending; tent-golden-hour-v4 has two images; the lamp
    jobs' prompt holds markup."""
    project = root / "project"
    project.mkdir(parents=True, exist_ok=True)
    manifest = project / "autumn-hero.yaml"
    manifest.write_text(MANIFEST, encoding="utf-8")
    run_dir = root / "runs" / run_id
    (run_dir / "outputs").mkdir(parents=True, exist_ok=True)
    (run_dir / "manifest.yaml").write_bytes(manifest.read_bytes())
    outcomes = outcomes or {}
    jobs = []
    n = 0
    for product in ("tent", "boots", "lamp"):
        for light in ("golden hour", "overcast"):
            for alias, model, provider in (("v4", "wiro/seedream-v4", "wiro"),
                                           ("pix", "pixwith/seedream-4.5", "pixwith")):
                name = f"{product}-{light.replace(' ', '-')}-{alias}"
                prompt = SCRIPT_PROMPT if product == "lamp" else f"Acme {product} at {light}"
                params = ({"size": "2048x2048", "maxImages": 2 if product == "tent" else 1}
                          if alias == "v4" else {"resolution": "2K", "aspect_ratio": "16:9"})
                images = 2 if (product == "tent" and alias == "v4") else 1
                status = outcomes.get(name, JobStatus.SUCCEEDED)
                if name == "boots-overcast-pix":
                    status = outcomes.get(name, JobStatus.FAILED)
                if name == "lamp-golden-hour-v4":
                    status = outcomes.get(name, JobStatus.UNKNOWN)
                if name == "lamp-overcast-pix":
                    status = outcomes.get(name, JobStatus.PENDING)
                reused = name == "tent-overcast-v4"
                outputs = []
                if status == JobStatus.SUCCEEDED:
                    for i in range(images):
                        rel = f"outputs/{name}/{i}.png"
                        rec = write_image(run_dir / rel, COLOURS[n % len(COLOURS)])
                        n += 1
                        outputs.append(replace(rec, job_key=key_of(name), path=rel, index=i,
                                               url=f"https://cdn.example/{name}/{i}.png"))
                cost = None
                credits = None
                if status == JobStatus.SUCCEEDED and not reused:
                    if provider == "wiro":
                        cost = 0.03 * images
                    else:
                        credits = 6.0 * images
                jobs.append(JobRecord(
                    key=key_of(name), name=name, provider=provider, model=model, alias=alias,
                    prompt=prompt, params=params, axes={"product": product, "light": light},
                    status=status,
                    error={JobStatus.FAILED: "pixwith: Invalid image format (code 0)",
                           JobStatus.UNKNOWN: "wiro: submit sent, answer lost (timeout)",
                           JobStatus.PENDING: "interrupted"}.get(JobStatus(status)),
                    task_id=None if status == JobStatus.PENDING else f"task-{len(jobs)}",
                    attempts=0 if status == JobStatus.PENDING else 1,
                    polls=3 if status == JobStatus.SUCCEEDED else 0,
                    submitted_at="2025-03-01T10:15:01Z" if status != JobStatus.PENDING else None,
                    started_at=1740824102.5 if status == JobStatus.SUCCEEDED else None,
                    finished_at="2025-03-01T10:15:09.250+00:00"
                    if status in (JobStatus.SUCCEEDED, JobStatus.FAILED) else None,
                    cost_usd=cost, credits=credits,
                    estimate_images=images,
                    estimate_usd=0.03 * images if provider == "wiro" else 0.0,
                    estimate_credits=6.0 * images if provider == "pixwith" else 0.0,
                    reused=reused, reused_from=PREVIOUS_RUN if reused else None,
                    outputs=tuple(outputs),
                ))
    meta = RunMeta(
        run_id=run_id, name="autumn-hero", manifest_path=str(manifest),
        manifest_sha256=hashlib.sha256(manifest.read_bytes()).hexdigest(),
        description="Hero shots, A/B on lighting",
        started_at="2025-03-01T10:15:00Z", finished_at="2025-03-01T10:16:30.5Z",
        axes=("product", "light"),
    )
    return SyntheticRun(run_dir, manifest, RunRecords(meta, tuple(jobs)))


@pytest.fixture
def synthetic(tmp_path: Path) -> SyntheticRun:
    return make_run(tmp_path)


@pytest.fixture
def report_of(synthetic: SyntheticRun) -> dict[str, Any]:
    from runner.report.build import build_report

    return build_report(synthetic.records, environment=ENVIRONMENT)


@pytest.fixture
def finished_run(synthetic: SyntheticRun) -> SyntheticRun:
    """The synthetic run with report.json, report.html and grid.png written."""
    from runner.report import finalize

    finalize(synthetic.run_dir, records=synthetic.records, secrets=())
    return synthetic


def load_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


JOURNAL_MANIFEST = b"""version: 1
name: lights
description: Light A/B
matrix:
  light: [dawn, dusk]
  include:
    - {light: noon, lens: wide}
models:
  v4: {model: wiro/seedream-v4}
jobs:
  - name: "{{ light }}"
    model: v4
    prompt: "a tent at {{ light }}"
  - name: solo
    model: v4
    matrix: {angle: [left]}
    prompt: "solo"
"""


def make_job(name: str, light: str, *, images: tuple[ImageRef, ...] = ()) -> Job:
    key = hashlib.sha256(name.encode()).hexdigest()
    return Job(key=key, name=name, alias="v4", model="wiro/seedream-v4", provider="wiro",
               prompt=f"a tent at {light}", params={"size": "2048x2048", "maxImages": 1},
               images=images, axes={"light": light}, estimate=Estimate(1, 0.03, 0.0))


@pytest.fixture
def journal_run(tmp_path: Path) -> Path:
    """A run directory as the executor leaves it: every journal state but cancelled."""
    from runner.execute.journal import JobState, Journal

    run_dir = tmp_path / "runs" / "20250301T000000Z-lights-abc123"
    (run_dir / "outputs").mkdir(parents=True)
    (run_dir / "manifest.yaml").write_bytes(JOURNAL_MANIFEST)
    ref = ImageRef(ref="refs/a.png", path="/abs/refs/a.png", sha256="ab" * 32)
    jobs = [make_job("dawn", "dawn", images=(ref,)), make_job("dusk", "dusk"),
            make_job("noon", "noon"), make_job("night", "night"), make_job("late", "late"),
            make_job("again", "again"), make_job("later", "later")]
    plan = {"format": 1, "name": "lights",
            "manifest": {"path": str(tmp_path / "lights.yaml"),
                         "sha256": hashlib.sha256(JOURNAL_MANIFEST).hexdigest()},
            "jobs": [job_to_dict(job) for job in jobs]}
    (run_dir / "plan.json").write_text(json.dumps(plan), encoding="utf-8")
    meta = {"run_id": run_dir.name, "name": "lights", "started_at": "2025-03-01T00:00:00.000Z",
            "manifest_path": str(tmp_path / "lights.yaml"),
            "manifest_sha256": hashlib.sha256(JOURNAL_MANIFEST).hexdigest(), "emulated": False}
    with Journal.create(run_dir / "journal.sqlite", jobs, meta,
                        skipped={jobs[6].key: "not selected by --only"}) as journal:
        dawn, dusk, noon, night, late, again, _ = (j.key for j in jobs)
        journal.mark_submitting(dawn)
        journal.mark_submitted(dawn, "task-1")
        journal.record_poll(dawn, task_state="running", provider_status="task_start",
                            state=JobState.RUNNING)
        journal.mark_downloading(dawn, [{"url": "https://cdn/x.png"}], cost_usd=0.0351,
                                 credits=None)
        out = run_dir / "outputs" / "dawn" / "0.png"
        out.parent.mkdir()
        Image.new("RGB", (40, 30), (200, 10, 10)).save(out)
        data = out.read_bytes()
        journal.record_output(OutputRecord(dawn, 0, "outputs/dawn/0.png", "https://cdn/x.png",
                                           len(data), hashlib.sha256(data).hexdigest(),
                                           "image/png", 40, 30))
        journal.mark_succeeded(dawn)
        journal.mark_submitting(dusk)
        journal.mark_submitted(dusk, "task-2")
        journal.mark_failed(dusk, "wiro: task failed (pexit 1)")
        journal.mark_submitting(noon)
        journal.mark_unknown(noon, "submit sent, no answer")
        journal.mark_submitting(night)
        journal.mark_submitted(night, "task-4")  # left attached: a stop mid-run
        journal.mark_submitting(late)  # left mid-submit
        reused = run_dir / "outputs" / "again" / "0.png"
        reused.parent.mkdir()
        Image.new("RGB", (40, 30), (10, 200, 10)).save(reused)
        data = reused.read_bytes()
        journal.mark_reused(again, [OutputRecord(again, 0, "outputs/again/0.png", None,
                                                 len(data), hashlib.sha256(data).hexdigest(),
                                                 "image/png", 40, 30)],
                            "20250201T000000Z-lights-old999")
        journal.set_meta("finished_at", "2025-03-01T00:01:00.000Z")
    return run_dir


class Kit:
    """The helpers above, handed to tests as a fixture (test modules import no conftest)."""

    ENVIRONMENT = ENVIRONMENT
    JOURNAL_MANIFEST = JOURNAL_MANIFEST
    SCRIPT_PROMPT = SCRIPT_PROMPT
    PREVIOUS_RUN = PREVIOUS_RUN
    make_run = staticmethod(make_run)
    write_image = staticmethod(write_image)
    key_of = staticmethod(key_of)
    load_json = staticmethod(load_json)


@pytest.fixture
def kit() -> type[Kit]:
    return Kit
