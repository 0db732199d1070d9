"""report.html in a real browser: headless Chromium renders a non-blank page."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from PIL import Image, ImageStat

CHROMIUM = Path("/usr/bin/chromium")


def test_chromium_renders_the_report(finished_run, tmp_path: Path) -> None:
    assert CHROMIUM.exists(), ("/usr/bin/chromium is missing: apt-get install -y chromium "
                               "(.ci/run does)")
    # the page alone, moved away from its run directory: thumbnails are embedded
    page = tmp_path / "moved" / "report.html"
    page.parent.mkdir()
    shutil.copy(finished_run.run_dir / "report.html", page)
    shot = tmp_path / "shot.png"
    profile = tmp_path / "profile"
    command = [
        str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
        "--no-first-run", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", f"--user-data-dir={profile}", f"--screenshot={shot}",
        "--window-size=1200,900", page.as_uri(),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    assert shot.is_file(), f"no screenshot; chromium said:\n{done.stderr[-2000:]}"
    with Image.open(shot) as image:
        assert image.size == (1200, 900)
        rgb = image.convert("RGB")
        assert ImageStat.Stat(rgb.convert("L")).stddev[0] > 20  # text, cards, thumbnails
        colours = rgb.getcolors(maxcolors=1 << 20)
        assert colours is not None
        assert len(colours) > 200  # anti-aliased text and images, not a flat page
        # the red of the first output's thumbnail reached the screen (embedded data: URI)
        assert any(abs(r - 220) < 12 and abs(g - 80) < 12 and abs(b - 60) < 12
                   for _, (r, g, b) in colours)
