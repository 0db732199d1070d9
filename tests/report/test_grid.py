"""The A/B grid: axis choice, the --grid override, cell layout, grid.png."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from PIL import Image, ImageStat

from runner.errors import ConfigError
from runner.report.grid import (
    GridSpec,
    axis_names,
    build_grid,
    choose_axes,
    parse_grid_option,
    render_grid_png,
)
from runner.report.thumbs import thumbnails


def job(name: str, alias: str = "v4", outputs: int = 1, status: str = "succeeded",
        **axes: Any) -> dict[str, Any]:
    return {"name": name, "alias": alias, "key": name, "status": status, "axes": axes,
            "prompt": "p", "outputs": [{"path": f"outputs/{name}/{i}.png", "index": i}
                                       for i in range(outputs)]}


def report(jobs: list[dict[str, Any]], axes: list[str]) -> dict[str, Any]:
    return {"axes": axes, "jobs": jobs}


def test_the_two_axes_with_most_values_are_chosen_wider_one_across() -> None:
    jobs = [job(f"{p}-{lt}-{s}", product=p, light=lt, seed=s)
            for p in ("tent", "boots") for lt in ("a", "b", "c", "d") for s in (1, 2, 3)]
    assert choose_axes(report(jobs, ["product", "light", "seed"])) == GridSpec("light", "seed")


def test_ties_are_broken_by_manifest_order_model_last() -> None:
    jobs = [job(f"{p}-{lt}-{m}", alias=m, product=p, light=lt)
            for p in ("tent", "boots") for lt in ("x", "y") for m in ("v4", "pix")]
    assert axis_names(report(jobs, ["light", "product"])) == ["light", "product", "model"]
    assert choose_axes(report(jobs, ["light", "product"])) == GridSpec("light", "product")
    assert choose_axes(report(jobs, ["product", "light"])) == GridSpec("product", "light")


def test_model_alias_counts_as_an_axis() -> None:
    jobs = [job(f"{p}-{m}", alias=m, product=p) for p in ("tent", "boots")
            for m in ("v4", "v45", "pix")]
    assert choose_axes(report(jobs, ["product"])) == GridSpec("model", "product")


def test_axes_with_a_single_value_do_not_qualify() -> None:
    jobs = [job(f"t-{lt}", product="tent", light=lt) for lt in ("a", "b")]
    assert choose_axes(report(jobs, ["product", "light"])) == GridSpec("light", None)
    single = [job("only", product="tent")]
    assert choose_axes(report(single, ["product"])) is None


def test_the_grid_option_overrides_the_choice() -> None:
    jobs = [job(f"{p}-{lt}-{m}", alias=m, product=p, light=lt)
            for p in ("tent", "boots", "lamp") for lt in ("x", "y") for m in ("v4", "pix")]
    rep = report(jobs, ["product", "light"])
    assert choose_axes(rep) == GridSpec("product", "light")
    assert choose_axes(rep, *parse_grid_option("x=model,y=product")) == GridSpec("model",
                                                                                  "product")
    # one side given: the other is the best remaining axis
    assert choose_axes(rep, *parse_grid_option("y=product")) == GridSpec("light", "product")
    assert choose_axes(rep, *parse_grid_option("x=light")) == GridSpec("light", "product")
    with pytest.raises(ConfigError, match=r"no axis named 'colour'.*axes: product, light, model"):
        choose_axes(rep, "colour", None)
    with pytest.raises(ConfigError, match="both 'light'"):
        choose_axes(rep, "light", "light")


@pytest.mark.parametrize("text", ["", "light", "x=", "z=light", "x=a,x=b"])
def test_bad_grid_options_are_refused(text: str) -> None:
    with pytest.raises(ConfigError, match="expected x=VAR,y=VAR"):
        parse_grid_option(text)


def test_cells_hold_every_job_with_several_images_side_by_side() -> None:
    jobs = [job("t-a-v4", "v4", 2, product="tent", light="a"),
            job("t-a-pix", "pix", 1, product="tent", light="a"),
            job("t-b-v4", "v4", 1, "failed", product="tent", light="b"),
            job("b-a-v4", "v4", 1, product="boots", light="a"),
            job("lamp-v4", "v4", 1, product="lamp")]  # no light: goes under "-"
    rep = report(jobs, ["product", "light"])
    grid = build_grid(rep, GridSpec("product", "light"))
    assert [c.text for c in grid.columns] == ["tent", "boots", "lamp"]
    assert [r.text for r in grid.rows] == ["a", "b", "-"]
    assert [j["name"] for j in grid.jobs_at(0, 0)] == ["t-a-v4", "t-a-pix"]
    assert grid.max_images == 3
    assert grid.jobs_at(1, 1) == ()
    assert [j["name"] for j in grid.jobs_at(2, 2)] == ["lamp-v4"]
    # the model varies inside cells, so captions name it (and the image index)
    assert grid.inner_axes == ("model",)
    first = jobs[0]
    assert grid.caption(first, first["outputs"][1]) == "v4 · #1"
    assert grid.caption(jobs[1], jobs[1]["outputs"][0]) == "pix"


def test_non_string_axis_values_group_by_value() -> None:
    jobs = [job(f"s{s}", seed=s, size=z) for s in (1, 2) for z in ({"w": 1}, {"w": 2})]
    grid = build_grid(report(jobs, ["seed", "size"]), GridSpec("seed", "size"))
    assert [c.text for c in grid.columns] == ["1", "2"]
    assert [r.text for r in grid.rows] == ['{"w": 1}', '{"w": 2}']


def test_grid_png_is_a_labelled_contact_sheet(finished_run, report_of) -> None:
    path = finished_run.run_dir / "grid.png"
    assert path.is_file()
    with Image.open(path) as sheet:
        assert sheet.format == "PNG"
        width, height = sheet.size
        grid = build_grid(report_of, choose_axes(report_of))
        assert width > 3 * 3 * 100  # three columns of up to three thumbnails
        assert height > 2 * 150  # two rows
        assert ImageStat.Stat(sheet.convert("L")).stddev[0] > 10  # not blank
        # the first tent image (red) is pasted inside the first cell
        colours = sheet.convert("RGB").getcolors(maxcolors=1 << 20)
        assert any(rgb == (220, 80, 60) for _, rgb in colours)
    assert [c.text for c in grid.columns] == ["tent", "boots", "lamp"]


def test_grid_png_survives_long_labels_and_missing_files(tmp_path: Path) -> None:
    long = "a very long matrix value " * 8
    jobs = [job("one", product=long, light="x"), job("two", product="b", light="y")]
    rep = report(jobs, ["product", "light"])
    grid = build_grid(rep, choose_axes(rep))
    out = render_grid_png(grid, thumbnails(tmp_path, rep), tmp_path / "grid.png", title="t")
    with Image.open(out) as sheet:
        assert sheet.width < 2000
