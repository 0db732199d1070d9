"""report.html: every output shown (parsed), text escaped, self-contained thumbnails."""

from __future__ import annotations

import base64
import io
from dataclasses import replace
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

from PIL import Image

from runner.report import render_run
from runner.report.build import build_report
from runner.report.grid import build_grid, choose_axes
from runner.report.html import render_html
from runner.report.records import RunRecords


class Page(HTMLParser):
    """Every tag with its attributes, the text of each element kind, and <script>s."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str]]] = []
        self.text: list[str] = []
        self.stack: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, {k: v or "" for k, v in attrs}))
        if tag not in ("img", "br", "meta", "link", "input"):
            self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if tag in self.stack:
            while self.stack and self.stack.pop() != tag:
                pass

    def handle_data(self, data: str) -> None:
        self.text.append(data)

    def find(self, tag: str, **attrs: str) -> list[dict[str, str]]:
        return [a for t, a in self.tags
                if t == tag and all(a.get(k.replace("_", "-")) == v for k, v in attrs.items())]


def parse(html: str) -> Page:
    page = Page()
    page.feed(html)
    page.close()
    return page


def test_every_output_has_an_image_with_its_job_name(finished_run) -> None:
    html = (finished_run.run_dir / "report.html").read_text(encoding="utf-8")
    page = parse(html)
    thumbs = page.find("img", **{"class": "thumb"})
    expected = [(job.name, out.path) for job in finished_run.records.jobs for out in job.outputs]
    assert len(thumbs) == len(expected) == 11
    shown = {(img["data-output"], img["alt"].split(" — ")[0]) for img in thumbs}
    assert shown == {(path, name) for name, path in expected}
    # each thumbnail is embedded (works when the page is moved alone) and links the file
    links = {a["href"] for a in page.find("a")}
    for img in thumbs:
        assert img["src"].startswith("data:image/jpeg;base64,")
        assert img["data-output"] in links
    # job names are visible text next to the images
    text = " ".join(page.text)
    for name, _ in expected:
        assert name in text


def test_thumbnails_are_small_real_images(tmp_path: Path, kit) -> None:
    run = kit.make_run(tmp_path)
    big = run.run_dir / "outputs" / "tent-golden-hour-pix" / "0.png"
    kit.write_image(big, (10, 120, 200), size=(1600, 900))  # replace one with a large image
    jobs = tuple(
        replace(j, outputs=tuple(replace(o, sha256="0" * 64, bytes=big.stat().st_size)
                                 for o in j.outputs))
        if j.name == "tent-golden-hour-pix" else j for j in run.records.jobs)
    report = build_report(RunRecords(run.records.meta, jobs), environment=kit.ENVIRONMENT)
    html_path, _ = render_run(run.run_dir, report)
    page = parse(html_path.read_text(encoding="utf-8"))
    img = next(i for i in page.find("img", **{"class": "thumb"})
               if i["data-output"].startswith("outputs/tent-golden-hour-pix/"))
    data = base64.b64decode(img["src"].split(",", 1)[1])
    with Image.open(io.BytesIO(data)) as thumb:
        assert max(thumb.size) == 256
        assert thumb.size == (256, 144)


def test_prompts_with_markup_are_inert_text(finished_run, kit) -> None:
    html = (finished_run.run_dir / "report.html").read_text(encoding="utf-8")
    page = parse(html)
    assert page.find("script") == []
    assert page.find("b") == []
    assert "<script>" not in html
    assert "&lt;script&gt;alert(" in html
    assert kit.SCRIPT_PROMPT in " ".join(page.text)  # shown, as text, exactly
    # and no script could run even if something slipped through
    csp = page.find("meta", http_equiv="Content-Security-Policy")
    assert len(csp) == 1
    assert "default-src 'none'" in csp[0]["content"]
    assert "script-src" not in csp[0]["content"]


def test_names_params_and_errors_are_escaped_everywhere(report_of: dict[str, Any]) -> None:
    hostile = '"><img src=x onerror=alert(1)>'
    job = report_of["jobs"][0]
    job["name"] = hostile
    job["params"] = {hostile: hostile}
    job["axes"] = {"product": hostile, "light": "golden hour"}
    failed = next(j for j in report_of["jobs"] if j["status"] == "failed")
    failed["error"] = hostile
    report_of["run"]["name"] = hostile
    spec = choose_axes(report_of)
    assert spec is not None
    html = render_html(report_of, {}, build_grid(report_of, spec))
    page = parse(html)
    assert not [a for _, a in page.tags if "onerror" in a]
    assert all(a.get("src") != "x" for a in page.find("img"))
    assert "&lt;img src=x onerror=alert(1)&gt;" in html


def test_summary_cost_table_failures_and_grid(finished_run) -> None:
    html = (finished_run.run_dir / "report.html").read_text(encoding="utf-8")
    page = parse(html)
    text = " ".join(" ".join(page.text).split())
    assert "9 / 12" in text  # succeeded of planned
    assert "$0.15" in text  # spent (0.06 + 0.03 × 3)
    assert "estimate $0.18" in text
    assert "1 min 30 s" in text
    for job in ("boots-overcast-pix", "lamp-golden-hour-v4", "lamp-overcast-pix"):
        assert job in text
    assert "pixwith: Invalid image format (code 0)" in text
    assert "wiro/seedream-v4" in text
    assert "pixwith/seedream-4.5" in text
    headers = [a for t, a in page.tags if t == "th" and a.get("scope") == "col"]
    assert len(headers) == 3  # tent, boots, lamp across
    grid_imgs = page.find("img", **{"class": "grid-thumb"})
    assert len(grid_imgs) == 11
    assert page.find("a", href="grid.png")


def test_output_paths_are_url_encoded_in_links(report_of: dict[str, Any]) -> None:
    report_of["jobs"][0]["outputs"][0]["path"] = "outputs/a b#c?.png"
    html = render_html(report_of, {})
    page = parse(html)
    assert page.find("a", href="outputs/a%20b%23c%3F.png")
    img = next(i for i in page.find("img", **{"class": "thumb"})
               if i["data-output"] == "outputs/a b#c?.png")
    assert img["src"] == "outputs/a%20b%23c%3F.png"  # no thumbnail: the file itself


def test_a_run_without_outputs_or_sweep_renders_plainly(report_of: dict[str, Any]) -> None:
    failed = next(j for j in report_of["jobs"] if j["status"] == "failed")
    report_of["jobs"] = [failed]
    report_of["totals"]["by_model"] = report_of["totals"]["by_model"][:1]
    assert choose_axes(report_of) is None  # one job: nothing to compare
    page = parse(render_html(report_of, {}, None))
    text = " ".join(" ".join(page.text).split())
    assert "No outputs in this run." in text
    assert "A/B grid" not in text
    assert "Invalid image format" in text
    assert page.find("img") == []
