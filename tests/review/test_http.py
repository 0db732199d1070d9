"""The viewer's HTTP surface: what it lists, what it serves (and refuses), how verdicts are
taken — over Starlette's TestClient, and over a real loopback socket for concurrent
writers."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import pytest
from PIL import Image
from review_support import JOB_NAMES, Project
from starlette.testclient import TestClient

from runner.review.app import create_app, serve_in_thread
from runner.review.picks import read_picks
from runner.review.runs import THUMB_PX


@pytest.fixture(scope="module")
def client(project: Project) -> TestClient:
    return TestClient(create_app(project.runs))


def test_runs_are_listed_newest_first_with_their_totals(client: TestClient,
                                                        project: Project) -> None:
    runs = client.get("/api/runs").json()["runs"]
    assert [r["id"] for r in runs] == [project.run2.name, project.run1.name]
    newest = runs[0]
    report = project.report(project.run2)
    assert (newest["jobs"], newest["succeeded"], newest["failed"], newest["images"]) == (
        9, 8, 1, report["totals"]["images"])
    assert newest["cost_usd"] == report["totals"]["cost_usd"]
    assert newest["credits"] == report["totals"]["credits"]
    assert newest["emulated"] is True
    assert newest["running"] is False


def test_a_gallery_holds_every_job_its_axes_and_no_verdict_yet(client: TestClient,
                                                               project: Project) -> None:
    doc = client.get(f"/api/runs/{project.run2.name}").json()
    assert sorted(j["name"] for j in doc["jobs"]) == JOB_NAMES
    assert doc["axes"] == ["product", "light", "model"]
    tent = next(j for j in doc["jobs"] if j["name"] == "tent-dawn-v4")
    assert tent["axes"] == {"product": "tent", "light": "dawn", "model": "v4"}
    assert tent["params"]["size"] == "2048x2048"
    assert tent["outputs"][0]["verdict"] is None
    assert doc["picks_file"] == str(project.picks)


def test_an_output_is_served_with_caching_headers_and_304_when_unchanged(
        client: TestClient, project: Project) -> None:
    rel = project.job(project.run2, "tent-dawn-pix")["outputs"][0]["path"]
    url = f"/image/{project.run2.name}/{rel}"
    first = client.get(url)
    assert first.status_code == 200
    assert first.content == (project.run2 / rel).read_bytes()
    assert "max-age" in first.headers["cache-control"]
    etag = first.headers["etag"]
    again = client.get(url, headers={"If-None-Match": etag})
    assert again.status_code == 304
    assert again.content == b""
    thumb = client.get(f"/thumb/{project.run2.name}/{rel}")
    assert thumb.headers["content-type"] == "image/jpeg"
    assert thumb.headers["etag"] != etag
    with Image.open(io.BytesIO(thumb.content)) as image:
        assert max(image.size) <= THUMB_PX


@pytest.mark.parametrize("path", [
    "outputs/../report.json",
    "outputs/%2e%2e/report.json",
    "outputs/..%2freport.json",
    "outputs/%2e%2e%2f%2e%2e%2f%2e%2e%2fetc%2fpasswd",
    "report.json",  # inside the run, but not an output
    "manifest.yaml",
    "%2fetc%2fpasswd",
    "outputs/tent-dawn-v4",  # a folder
    "outputs/nothing-here.png",
])
def test_nothing_outside_a_runs_outputs_is_served(client: TestClient, project: Project,
                                                  path: str) -> None:
    for route in ("image", "thumb"):
        response = client.get(f"/{route}/{project.run2.name}/{path}")
        assert response.status_code == 404, (route, path)
        assert b'"jobs"' not in response.content
        assert b"root:" not in response.content


@pytest.mark.parametrize("run_id", ["..", "%2e%2e", "..%2f..", "nope", "%2fetc"])
def test_an_unknown_or_escaping_run_name_is_404(client: TestClient, run_id: str) -> None:
    assert client.get(f"/api/runs/{run_id}").status_code == 404
    assert client.get(f"/image/{run_id}/outputs/x.png").status_code == 404


def test_symlinks_that_lead_out_of_a_run_are_refused(project: Project, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    own = runs / project.run1.name
    shutil.copytree(project.run1, own)
    secret = tmp_path / "secret.png"
    secret.write_bytes((project.run1 / project.job(project.run1, "tent-dawn-pix")
                        ["outputs"][0]["path"]).read_bytes())
    (own / "outputs" / "leak.png").symlink_to(secret)
    (own / "outputs" / "up").symlink_to(tmp_path)
    (runs / "elsewhere").symlink_to(project.run2)  # a run folder that is a symlink out
    inside = own / "outputs" / "inside.png"
    inside.symlink_to(own / project.job(project.run1, "tent-dawn-pix")["outputs"][0]["path"])
    client = TestClient(create_app(runs))
    assert client.get(f"/image/{own.name}/outputs/leak.png").status_code == 404
    assert client.get(f"/image/{own.name}/outputs/up/secret.png").status_code == 404
    assert client.get("/api/runs/elsewhere").status_code == 404
    assert [r["id"] for r in client.get("/api/runs").json()["runs"]] == [own.name]
    # a link that stays inside the run is an ordinary file of it
    assert client.get(f"/image/{own.name}/outputs/inside.png").status_code == 200


def _post(client: TestClient | httpx.Client, body: object, **headers: str) -> httpx.Response:
    return client.post("/api/verdict", content=json.dumps(body),
                       headers={"Content-Type": "application/json", **headers})


@pytest.mark.parametrize(("body", "status", "says"), [
    ({"run": "nope", "key": "k", "index": 0, "verdict": "pick"}, 404, "no run named"),
    ({"key": "k", "index": 0}, 400, "run and key must be strings"),
    ({"run": "RUN", "key": "k", "index": "0"}, 400, "index must be a whole number"),
    ({"run": "RUN", "key": "k", "index": 0, "verdict": "pick"}, 404, "has no job with key"),
    ({"run": "RUN", "key": "KEY", "index": 3, "verdict": "pick"}, 404, "has no image 3"),
    ({"run": "RUN", "key": "KEY", "index": 0, "verdict": "maybe"}, 400, "verdict 'maybe'"),
    ({"run": "RUN", "key": "KEY", "index": 0, "stars": 9}, 400, "stars 9"),
    ({"run": "RUN", "key": "KEY", "index": 0, "note": "x" * 5000}, 400, "at most 2000"),
    (["not", "an", "object"], 400, "expected a JSON object"),
])
def test_bad_verdicts_are_refused_with_a_reason_and_write_nothing(
        client: TestClient, project: Project, body: object, status: int, says: str) -> None:
    key = project.job(project.run2, "tent-dusk-pix")["key"]
    text = json.dumps(body).replace("RUN", project.run2.name).replace("KEY", key)
    before = project.picks.read_bytes() if project.picks.exists() else None
    response = _post(client, json.loads(text))
    assert response.status_code == status
    assert says in response.json()["error"]
    after = project.picks.read_bytes() if project.picks.exists() else None
    assert after == before


def test_a_verdict_must_be_json_from_this_origin_and_this_host(client: TestClient,
                                                              project: Project) -> None:
    job = project.job(project.run2, "tent-dusk-pix")
    body = {"run": project.run2.name, "key": job["key"], "index": 0, "verdict": "pick"}
    form = client.post("/api/verdict", data={"run": "x"})
    assert form.status_code == 415
    assert _post(client, body, Origin="http://evil.example").status_code == 403
    broken = client.post("/api/verdict", content=b"{nope",
                         headers={"Content-Type": "application/json"})
    assert broken.status_code == 400
    loopback = TestClient(create_app(project.runs, allowed_hosts=("127.0.0.1", "localhost")))
    assert loopback.get("/api/runs", headers={"Host": "rebound.example"}).status_code == 400
    assert loopback.get("/api/runs", headers={"Host": "127.0.0.1:8686"}).status_code == 200


def test_verdicts_of_a_changed_job_show_as_previous(client: TestClient,
                                                    project: Project) -> None:
    old = project.job(project.run1, "boots-dusk-v4")
    new = project.job(project.run2, "boots-dusk-v4")
    assert old["key"] != new["key"]  # v4's size changed between the runs
    answer = _post(client, {"run": project.run1.name, "key": old["key"], "index": 0,
                            "verdict": "reject", "stars": 2})
    assert answer.status_code == 200
    assert answer.json()["verdict"] == "reject"
    assert answer.json()["previous"] is False
    doc = client.get(f"/api/runs/{project.run2.name}").json()
    shown = next(j for j in doc["jobs"] if j["name"] == "boots-dusk-v4")["outputs"][0]
    assert (shown["verdict"], shown["stars"], shown["previous"]) == ("reject", 2, True)
    unchanged = next(j for j in doc["jobs"] if j["name"] == "boots-dusk-pix")["outputs"][0]
    assert unchanged["previous"] is False
    # judged again: its own verdict, the old one stays under the old key
    _post(client, {"run": project.run2.name, "key": new["key"], "index": 0, "verdict": "pick"})
    doc = client.get(f"/api/runs/{project.run2.name}").json()
    shown = next(j for j in doc["jobs"] if j["name"] == "boots-dusk-v4")["outputs"][0]
    assert (shown["verdict"], shown["stars"], shown["previous"]) == ("pick", None, False)
    picks = read_picks(project.picks)
    assert picks["jobs"][old["key"]]["images"]["0"] == {"verdict": "reject", "stars": 2}
    assert picks["jobs"][new["key"]] == {"name": "boots-dusk-v4",
                                         "images": {"0": {"verdict": "pick"}}}


def test_compare_two_runs_flags_the_jobs_whose_spec_changed(client: TestClient,
                                                            project: Project) -> None:
    doc = client.get(f"/api/compare?a={project.run1.name}&b={project.run2.name}").json()
    changed = sorted(r["label"] for r in doc["rows"] if r["key_changed"])
    assert changed == sorted(n for n in JOB_NAMES if n.endswith("v4") or n == "broken")
    tent = next(r for r in doc["rows"] if r["label"] == "tent-dawn-v4")
    assert tent["diff"] == [{"field": "params.size", "a": "1024x1024", "b": "2048x2048"}]
    pix = next(r for r in doc["rows"] if r["label"] == "tent-dawn-pix")
    assert (pix["key_changed"], pix["diff"]) == (False, [])
    assert (doc["changed"], doc["only_a"], doc["only_b"]) == (5, 0, 0)


def test_compare_two_values_of_an_axis_pairs_jobs_by_the_other_axes(
        client: TestClient, project: Project) -> None:
    doc = client.get(f"/api/compare?run={project.run2.name}&axis=model&a=v4&b=pix").json()
    labels = [r["label"] for r in doc["rows"]]
    assert "light=dawn · product=tent" in labels
    row = next(r for r in doc["rows"] if r["label"] == "light=dawn · product=tent")
    assert (row["a"]["name"], row["b"]["name"]) == ("tent-dawn-v4", "tent-dawn-pix")
    fields = [d["field"] for d in row["diff"]]
    assert fields[0] == "model"
    assert "params.size" in fields
    assert "params.resolution" in fields
    bad = client.get(f"/api/compare?run={project.run2.name}&axis=colour&a=1&b=2")
    assert bad.status_code == 400
    assert "no axis named 'colour'" in bad.json()["error"]
    assert client.get("/api/compare?a=only-one").status_code == 400


def test_two_writers_at_once_lose_no_verdict(project: Project, tmp_path: Path) -> None:
    """Through a real socket: one thread picks every image while the command line writes a
    note on each, all at the same time; every verdict and every note is in the file."""
    doc_jobs = [j for j in project.report(project.run2)["jobs"] if j["outputs"]]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    with serve_in_thread(project.runs) as server, httpx.Client(base_url=server.url,
                                                               timeout=60) as http:
        errors: list[str] = []

        def picker() -> None:
            for job in doc_jobs:
                for stars in (1, 2, 3):
                    r = _post(http, {"run": project.run2.name, "key": job["key"], "index": 0,
                                     "verdict": "pick", "stars": stars})
                    if r.status_code != 200:
                        errors.append(r.text)

        thread = threading.Thread(target=picker)
        thread.start()
        cli = [subprocess.Popen(
            [sys.executable, "-m", "runner", "pick", str(project.manifest), f"{job['name']}/1",
             "--note", f"note {job['name']}"], env=env, stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE, text=True) for job in doc_jobs]
        outcomes = [(p.wait(timeout=120), p.stderr.read() if p.stderr else "") for p in cli]
        thread.join(timeout=120)
    assert errors == []
    assert [code for code, _ in outcomes] == [0] * len(cli), outcomes
    picks = read_picks(project.picks)
    for job in doc_jobs:
        images = picks["jobs"][job["key"]]["images"]
        assert images["0"] == {"verdict": "pick", "stars": 3}
        assert images["1"] == {"verdict": "pick", "note": f"note {job['name']}"}
