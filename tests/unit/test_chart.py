"""bench/chart.py: the SVG is well-formed, its ticks are 1-2-5 steps, NaN breaks a line, text is escaped."""

from __future__ import annotations

import itertools
import math
import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from stormwatch.bench.chart import Band, Panel, Series, svg

NS = "{http://www.w3.org/2000/svg}"


def parse(text: str) -> ET.Element:
    root = ET.fromstring(text)
    assert root.tag == f"{NS}svg"
    return root


def series_groups(root: ET.Element) -> list[ET.Element]:
    return [g for g in root.iter(f"{NS}g") if g.get("class") == "series"]


def texts(root: ET.Element, cls: str) -> list[str]:
    return [t.text or "" for t in root.iter(f"{NS}text") if t.get("class") == cls]


def tick_value(label: str) -> float:
    scale = {"k": 1e3, "M": 1e6, "G": 1e9}
    label = label.replace(",", "")
    if label[-1] in scale:
        return float(label[:-1]) * scale[label[-1]]
    return float(label)


def assert_finite_coordinates(root: ET.Element) -> None:
    for element in root.iter():
        for name in ("x", "y", "cx", "cy", "width", "height"):
            if name in element.attrib:
                assert math.isfinite(float(element.attrib[name])), (element.tag, element.attrib)
        for name in ("points", "d"):
            for number in re.findall(r"[a-zA-Z]+", element.attrib.get(name, "")):
                assert number in "MHVh", (element.tag, element.attrib)


def is_125(step: float) -> bool:
    exp = math.floor(math.log10(step))
    mantissa = step / 10**exp
    return any(math.isclose(mantissa, m, rel_tol=1e-9) for m in (1, 2, 5, 10))


def line(n: int = 50, f: float = 1.0, offset: float = 0.0) -> list[tuple[float, float]]:
    return [(float(i), offset + f * math.sin(i / 7) * 40 + 50) for i in range(n)]


def simple(*series: Series, **panel: Any) -> str:
    return svg([Panel("Panel", "units", list(series), **panel)], x_label="seconds", title="Chart")


def test_standalone_document() -> None:
    text = simple(Series("a", line()))
    root = parse(text)
    assert text.startswith('<svg xmlns="http://www.w3.org/2000/svg"')
    width, height = int(root.get("width", "0")), int(root.get("height", "0"))
    assert width == 960 and height > 100
    assert root.get("viewBox") == f"0 0 {width} {height}"
    assert root.get("font-family") == "sans-serif"
    assert "<script" not in text and "@import" not in text and "href" not in text
    assert root.find(f"{NS}title") is not None


def test_one_line_per_series_and_palette_colours() -> None:
    root = parse(simple(*(Series(f"s{i}", line(offset=i)) for i in range(8))))
    groups = series_groups(root)
    assert [g.get("data-series") for g in groups] == [f"s{i}" for i in range(8)]
    assert all(len(g.findall(f"{NS}polyline")) == 1 for g in groups)
    colours = [g.get("stroke") for g in groups]
    assert len(set(colours)) == 8
    legend = [e for e in root.iter(f"{NS}g") if e.get("class") == "legend-entry"]
    assert [e.find(f"{NS}text").text for e in legend] == [f"s{i}" for i in range(8)]  # type: ignore[union-attr]


def test_explicit_colour_does_not_use_up_the_palette() -> None:
    root = parse(simple(Series("a", line(), color="red"), Series("b", line()), Series("c", line())))
    assert [g.get("stroke") for g in series_groups(root)] == ["red", "#0072B2", "#E69F00"]


def test_nan_gap_splits_the_line() -> None:
    points = line(40)
    points[20] = (20.0, float("nan"))
    root = parse(simple(Series("gappy", points)))
    (group,) = series_groups(root)
    polylines = group.findall(f"{NS}polyline")
    assert len(polylines) == 2
    counts = [len(p.get("points", "").split()) for p in polylines]
    assert counts == [20, 19]


def test_isolated_points_are_dots() -> None:
    nan = float("nan")
    points = [(0.0, 1.0), (1.0, nan), (2.0, 3.0), (3.0, nan), (4.0, 2.0), (5.0, 4.0)]
    (group,) = series_groups(parse(simple(Series("dots", points))))
    assert len(group.findall(f"{NS}polyline")) == 1
    assert len(group.findall(f"{NS}circle")) == 2


def test_ticks_are_125_steps() -> None:
    for top in (0.37, 7.0, 13.0, 99.0, 5230.0, 48_000.0, 3.2e6):
        root = parse(simple(Series("a", [(0.0, 0.0), (17.3, top)])))
        for axis in ("tick-y", "tick-x"):
            values = [tick_value(t) for t in texts(root, axis)]
            assert len(values) >= 3, (top, axis, values)
            steps = [b - a for a, b in itertools.pairwise(values)]
            assert all(math.isclose(s, steps[0], rel_tol=1e-6) for s in steps), (top, values)
            assert is_125(steps[0]), (top, axis, values)
        y_values = [tick_value(t) for t in texts(root, "tick-y")]
        assert y_values[0] == 0 and y_values[-1] >= top  # the upper bound is rounded up to a tick


def test_tick_labels() -> None:
    root = parse(simple(Series("a", [(0.0, 4800.0), (60.0, 5200.0)])))
    assert texts(root, "tick-y") == ["0", "1,000", "2,000", "3,000", "4,000", "5,000", "6,000"]
    assert texts(root, "tick-x") == [str(v) for v in range(0, 70, 10)]
    root = parse(simple(Series("a", [(0.0, 0.0), (1.0, 0.3)])))
    assert texts(root, "tick-y")[:3] == ["0", "0.05", "0.10"]


def test_fixed_bounds() -> None:
    root = parse(simple(Series("a", [(0.0, 3.0), (1.0, 90.0)]), y_min=None, y_max=50.0))
    values = [tick_value(t) for t in texts(root, "tick-y")]
    assert values[0] <= 3.0 and values[-1] == 50.0


def test_log_scale_ticks_in_real_values() -> None:
    points = [(float(i), float(10**i)) for i in range(6)]
    root = parse(simple(Series("lag", points), log_y=True))
    labels = texts(root, "tick-y")
    assert labels[0] == "0" and labels[-1] == "100k"
    values = [tick_value(t) for t in labels]
    assert all(v == 0 or is_125(v) for v in values)
    assert values == sorted(values)


def test_escaping() -> None:
    name = 'a<b>&"c" \x00'
    text = svg(
        [Panel("p<&>", "y<&>", [Series(name, line())])],
        x_label="x<&>",
        title="t<&>",
        bands=[Band(1.0, 2.0, "kill <&>")],
    )
    root = parse(text)
    (group,) = series_groups(root)
    assert group.get("data-series") == 'a<b>&"c" '
    all_text = ["".join(t.itertext()) for t in root.iter(f"{NS}text")]
    for expected in ("p<&>", "y<&>", "x<&>", "t<&>", "kill <&>", 'a<b>&"c" '):
        assert expected in all_text
    assert "a<b>" not in text


def test_deterministic() -> None:
    def build() -> str:
        panels = [
            Panel("Memory", "MB", [Series(f"p{i}", line(300, f=i + 1)) for i in range(4)]),
            Panel("Lag", "records", [Series("lag", line(300))], log_y=True),
        ]
        return svg(panels, x_label="s", title="T", bands=[Band(10, 20, "kill a"), Band(12, 30, "net b")])

    assert build().encode() == build().encode()


def test_edge_cases_render() -> None:
    nan = float("nan")
    cases = [
        Panel("no series", "y", []),
        Panel("empty series", "y", [Series("empty", [])]),
        Panel("one point", "y", [Series("one", [(3.0, 7.0)])]),
        Panel("all equal", "y", [Series("flat", [(float(i), 5.0) for i in range(10)])]),
        Panel("all equal, free", "y", [Series("flat", [(float(i), 5.0) for i in range(10)])], y_min=None),
        Panel("all zero", "y", [Series("zero", [(float(i), 0.0) for i in range(10)])]),
        Panel("all NaN", "y", [Series("nan", [(float(i), nan) for i in range(10)])]),
        Panel("negative", "y", [Series("neg", [(0.0, -5.0), (1.0, -2.0)])], y_min=None),
        Panel("inf", "y", [Series("inf", [(0.0, 1.0), (1.0, math.inf), (2.0, 3.0)])]),
        Panel("log empty", "y", [], log_y=True),
        Panel("log small", "y", [Series("s", [(0.0, 0.1), (1.0, 0.4)])], log_y=True),
        Panel("bad bounds", "y", [Series("s", line())], y_min=10.0, y_max=5.0),
    ]
    for panel in cases:
        root = parse(svg([panel], x_label="x", title=panel.title))
        values = [tick_value(t) for t in texts(root, "tick-y")]
        assert len(values) >= 2, (panel.title, values)
        assert values == sorted(values)
        assert_finite_coordinates(root)
    (group,) = series_groups(parse(svg([cases[2]], x_label="x", title="t")))
    assert len(group.findall(f"{NS}circle")) == 1 and not group.findall(f"{NS}polyline")
    (group,) = series_groups(parse(svg([cases[1]], x_label="x", title="t")))
    assert not group.findall(f"{NS}circle") and not group.findall(f"{NS}polyline")
    assert parse(svg([], x_label="x", title="nothing")) is not None


def test_bands_shade_every_panel_and_labels_do_not_overlap() -> None:
    bands = [Band(10, 12, "kill broker-1"), Band(11, 13, "kill broker-2"), Band(40, 45, "partition a")]
    panels = [Panel(f"p{i}", "y", [Series("s", line(60))]) for i in range(3)]
    root = parse(svg(panels, x_label="x", title="t", bands=bands))
    rects = [r for r in root.iter(f"{NS}rect") if r.get("class") == "band"]
    assert len(rects) == 3 * len(bands)
    fills = [r.get("fill") for r in rects[:3]]
    assert fills[0] == fills[1] != fills[2]  # one colour per label prefix
    labels = [t for t in root.iter(f"{NS}text") if t.get("class") == "band-label"]
    assert [t.text for t in labels] == ["kill broker-1", "kill broker-2", "partition a"]
    # the overlapping two are staggered onto separate rows
    assert labels[0].get("y") != labels[1].get("y")


def test_coordinates_are_rounded_and_size_is_reasonable() -> None:
    panels = [Panel("big", "y", [Series(f"s{i}", line(2000, offset=i)) for i in range(8)])]
    text = svg(panels, x_label="x", title="t")
    numbers = re.findall(r"\d+\.\d+", text)
    assert numbers and all(len(n.split(".")[1]) == 1 for n in numbers)
    assert len(text) < 8 * 2000 * 14 + 20_000


def test_writes_to_a_file(tmp_path: Path) -> None:
    path = tmp_path / "chart.svg"
    path.write_text(simple(Series("a", line())), encoding="utf-8")
    assert parse(path.read_text(encoding="utf-8")) is not None


@pytest.mark.parametrize("width", [320, 960, 1600])
def test_long_legend_wraps_inside_the_width(width: int) -> None:
    names = [f"process number {i} with a long name" for i in range(8)]
    root = parse(
        svg([Panel("Memory", "MB", [Series(n, line()) for n in names])], x_label="x", title="t", width=width)
    )
    entries = [e for e in root.iter(f"{NS}g") if e.get("class") == "legend-entry"]
    xs = [float(e.find(f"{NS}text").get("x", "0")) for e in entries]  # type: ignore[union-attr]
    ys = [float(e.find(f"{NS}text").get("y", "0")) for e in entries]  # type: ignore[union-attr]
    assert len(entries) == 8 and all(x < width for x in xs)
    assert len(set(ys)) > 1  # wrapped onto more than one row
    # the legend stays above the plot: its last row is above the top of the clip rectangle
    clip_top = float(root.find(f".//{NS}clipPath/{NS}rect").get("y", "0"))  # type: ignore[union-attr]
    assert max(ys) < clip_top


def test_many_layouts_render() -> None:
    for width in (320, 480, 700, 960, 1400):
        for count in range(9):
            for length in (1, 12, 40):
                series = [Series("n" * length + str(i), line(20, offset=i)) for i in range(count)]
                root = parse(svg([Panel("t" * length, "y", series)], x_label="x", title="t", width=width))
                assert len(series_groups(root)) == count
                assert_finite_coordinates(root)
