"""Line charts as standalone SVG documents, for the benchmark reports in docs/.

They are drawn here, without dependencies, because we deliberately don't add matplotlib for one picture.

    from stormwatch.bench.chart import Band, Panel, Series, svg

    text = svg(
        [Panel("Memory", "MB", [Series("ingest", [(0.0, 81.5), (1.0, 82.0)])])],
        x_label="minutes",
        title="Soak, 60 minutes",
        bands=[Band(20.0, 25.0, "kill broker-2")],
    )
    Path("docs/images/soak.svg").write_text(text)

Panels are stacked and share the x axis. Ticks fall on 1-2-5 steps with grid lines; a y of NaN breaks its
line; a band (a fault's duration, say) shades every panel and is labelled above the first, and bands whose
labels start with the same word share a colour. There are no scripts and no external fonts, so the file
renders the same in a browser and on GitHub, and the same input always gives the same bytes: a regenerated
chart only shows up in a diff when its data changed.
"""

from __future__ import annotations

import math
import re
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

__all__ = ["Band", "Panel", "Series", "svg"]

# Okabe & Ito's colour-blind-safe palette; its yellow is too faint for a thin line on white, so grey
# takes its place.
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#000000", "#999999")
# Band fills, one per label prefix in order of first appearance (drawn at BAND_OPACITY).
BAND_PALETTE = ("#999999", "#E69F00", "#56B4E9", "#CC79A7", "#009E73", "#D55E00")
BAND_OPACITY = 0.2

_TITLE_SIZE = 16
_PANEL_TITLE_SIZE = 13
_LABEL_SIZE = 12
_TICK_SIZE = 11
_LEGEND_SIZE = 11
_BAND_LABEL_SIZE = 10
_TEXT = "#222222"
_MUTED = "#555555"
_GRID = "#e6e6e6"
_AXIS = "#888888"

_MARGIN_RIGHT = 20
_TOP = 44  # below the chart title
_PANEL_GAP = 16
_LEGEND_ROW = 16
_BAND_ROW = 13
_MIN_PLOT_HEIGHT = 40

# Characters XML 1.0 does not allow at all; they are dropped from the text.
_INVALID_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")

_Pixel = Callable[[float], float]


@dataclass(frozen=True)
class Series:
    """One line: legend text, (x, y) points, and a CSS colour (None: the palette's next colour)."""

    name: str
    points: Sequence[tuple[float, float]]
    color: str | None = None


@dataclass(frozen=True)
class Band:
    """An x range shaded in every panel (a fault's duration, say), labelled above the first panel."""

    start: float
    end: float
    label: str


@dataclass(frozen=True)
class Panel:
    """One chart of the stack. y_min and y_max of None come from the data (the upper bound rounded up to a
    tick); values outside fixed bounds are clipped. log_y draws log10(1 + y), ticks labelled in real values."""

    title: str
    y_label: str
    series: Sequence[Series]
    y_min: float | None = 0.0
    y_max: float | None = None
    log_y: bool = False


def svg(
    panels: Sequence[Panel],
    *,
    x_label: str,
    title: str,
    bands: Sequence[Band] = (),
    width: int = 960,
    panel_height: int = 220,
) -> str:
    """Stacked panels sharing the x axis; returns the SVG document text."""
    width = max(int(width), 320)
    panel_height = max(int(panel_height), 100)
    uid = f"c{zlib.crc32(repr((title, [p.title for p in panels])).encode()):08x}"

    y_axes = [_panel_axis(panel, panel_height) for panel in panels]
    widest_tick = max((_text_width(label, _TICK_SIZE) for axis in y_axes for label in axis.labels), default=0)
    left = math.ceil(24 + widest_tick + 10)
    plot_left = float(left)
    plot_right = float(width - _MARGIN_RIGHT)
    plot_w = plot_right - plot_left

    x_axis = _x_axis(panels, bands, target=max(3, int(plot_w // 90)))

    def px(x: float) -> float:
        return plot_left + x_axis.fraction(x) * plot_w

    out: list[str] = []
    body: list[str] = []
    defs: list[str] = []

    band_colors = _band_colors(bands)
    band_spans = [_band_span(band, px, plot_left, plot_right) for band in bands]
    band_labels, band_rows = _place_band_labels(bands, band_spans, plot_left, plot_right)

    y = float(_TOP)
    plot_bottom = y
    for index, (panel, y_axis) in enumerate(zip(panels, y_axes, strict=True)):
        legend, legend_rows = _legend(panel, plot_left, plot_right, y)
        header_h = 14 + (legend_rows - 1) * _LEGEND_ROW + 10
        strip_h = band_rows * _BAND_ROW + 4 if index == 0 and band_rows else 0
        plot_top = y + header_h + strip_h
        # every plot is as tall as one under a one-row legend: a longer legend makes its panel taller
        plot_h = max(float(_MIN_PLOT_HEIGHT), panel_height - 24 - _PANEL_GAP)
        plot_bottom = plot_top + plot_h

        def py(v: float, top: float = plot_top, h: float = plot_h, axis: _Axis = y_axis) -> float:
            # far-off values are pulled in, so a clipped line keeps sane coordinates
            return min(max(top + (1.0 - axis.fraction(v)) * h, top - h), top + 2 * h)

        body.append(f'<g class="panel" data-title="{_esc(panel.title)}">')
        body.append(
            f'<text x="{_f(plot_left)}" y="{_f(y + 14)}" font-size="{_PANEL_TITLE_SIZE}" font-weight="bold" fill="{_TEXT}">{_esc(panel.title)}</text>'
        )
        body.extend(legend)

        # y ticks, leaving out any that would crowd the one below (0 and 1 on a log scale, say)
        y_ticks: list[tuple[float, str]] = []
        for tick, label in zip(y_axis.ticks, y_axis.labels, strict=True):
            if not y_ticks or abs(py(y_ticks[-1][0]) - py(tick)) >= _TICK_SIZE + 3:
                y_ticks.append((tick, label))

        # grid
        grid: list[str] = []
        for tick, _ in y_ticks:
            grid.append(f"M{_f(plot_left)} {_f(py(tick))}H{_f(plot_right)}")
        for tick in x_axis.ticks:
            gx = px(tick)
            grid.append(f"M{_f(gx)} {_f(plot_top)}V{_f(plot_bottom)}")
        if grid:
            body.append(
                f'<path class="grid" d="{"".join(grid)}" stroke="{_GRID}" stroke-width="1" fill="none"/>'
            )

        # bands, behind the lines; in the first panel they reach up through the label strip
        band_top = plot_top - strip_h
        for band_index, (lo_px, hi_px) in enumerate(band_spans):
            if hi_px < lo_px:
                continue
            body.append(
                f'<rect class="band" x="{_f(lo_px)}" y="{_f(band_top)}" width="{_f(max(hi_px - lo_px, 1.0))}" '
                f'height="{_f(plot_bottom - band_top)}" fill="{band_colors[band_index]}" fill-opacity="{BAND_OPACITY}"/>'
            )
        if index == 0:
            for x0, row, label in band_labels:
                body.append(
                    f'<text class="band-label" x="{_f(x0)}" y="{_f(y + header_h + 10 + row * _BAND_ROW)}" '
                    f'font-size="{_BAND_LABEL_SIZE}" fill="{_MUTED}">{_esc(label)}</text>'
                )

        # axes: a frame line on the left and at the bottom
        body.append(
            f'<path class="axis" d="M{_f(plot_left)} {_f(plot_top)}V{_f(plot_bottom)}H{_f(plot_right)}" '
            f'stroke="{_AXIS}" stroke-width="1" fill="none"/>'
        )
        for tick, label in y_ticks:
            body.append(
                f'<text class="tick-y" x="{_f(plot_left - 6)}" y="{_f(py(tick) + 0.35 * _TICK_SIZE)}" '
                f'font-size="{_TICK_SIZE}" text-anchor="end" fill="{_MUTED}">{_esc(label)}</text>'
            )
        label_x = 6 + 0.75 * _LABEL_SIZE
        label_y = plot_top + plot_h / 2
        body.append(
            f'<text class="y-label" x="{_f(label_x)}" y="{_f(label_y)}" font-size="{_LABEL_SIZE}" fill="{_TEXT}" '
            f'text-anchor="middle" transform="rotate(-90 {_f(label_x)} {_f(label_y)})">{_esc(panel.y_label)}</text>'
        )

        # the lines, clipped to the plot area (a little taller, so a line along an edge stays whole)
        clip = f"{uid}-p{index}"
        defs.append(
            f'<clipPath id="{clip}"><rect x="{_f(plot_left)}" y="{_f(plot_top - 2)}" '
            f'width="{_f(plot_w)}" height="{_f(plot_h + 4)}"/></clipPath>'
        )
        body.append(f'<g clip-path="url(#{clip})">')
        for series, color in zip(panel.series, _series_colors(panel.series), strict=True):
            body.extend(_series(series, color, px, py))
        body.append("</g>")
        body.append("</g>")
        y = plot_bottom + _PANEL_GAP

    # the shared x axis, below the last panel
    for tick, label in zip(x_axis.ticks, x_axis.labels, strict=True):
        body.append(
            f'<text class="tick-x" x="{_f(px(tick))}" y="{_f(plot_bottom + 16)}" font-size="{_TICK_SIZE}" '
            f'text-anchor="middle" fill="{_MUTED}">{_esc(label)}</text>'
        )
    body.append(
        f'<text class="x-label" x="{_f(plot_left + plot_w / 2)}" y="{_f(plot_bottom + 36)}" '
        f'font-size="{_LABEL_SIZE}" text-anchor="middle" fill="{_TEXT}">{_esc(x_label)}</text>'
    )
    height = math.ceil(plot_bottom + 48)

    out.append(
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif">'
    )
    out.append(f"<title>{_esc(title)}</title>")
    if defs:
        out.append("<defs>" + "".join(defs) + "</defs>")
    out.append(f'<rect width="{width}" height="{height}" fill="#ffffff"/>')
    out.append(
        f'<text class="title" x="{_f(plot_left)}" y="26" font-size="{_TITLE_SIZE}" font-weight="bold" '
        f'fill="{_TEXT}">{_esc(title)}</text>'
    )
    out.extend(body)
    out.append("</svg>")
    return "\n".join(out) + "\n"


# --- axes -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Axis:
    lo: float
    hi: float
    ticks: list[float]
    labels: list[str]
    log: bool = False

    def fraction(self, v: float) -> float:
        """Where v falls between lo (0.0) and hi (1.0)."""
        lo, hi, v = (_log1p10(self.lo), _log1p10(self.hi), _log1p10(v)) if self.log else (self.lo, self.hi, v)
        return (v - lo) / (hi - lo) if hi > lo else 0.5


def _log1p10(v: float) -> float:
    return math.log10(1.0 + max(v, 0.0))


def _step(span: float, target: int) -> tuple[int, int]:
    """The smallest 1-2-5 step (as mantissa, exponent) that cuts span into at most target intervals."""
    raw = span / max(target, 1)
    if not (raw > 0 and math.isfinite(raw)):
        return 1, 0
    exp = math.floor(math.log10(raw))
    for mantissa in (1, 2, 5, 10):
        if _value(mantissa, exp) >= raw * (1 - 1e-9):
            return (1, exp + 1) if mantissa == 10 else (mantissa, exp)
    return 1, exp + 1  # pragma: no cover - the loop always returns


def _value(multiple: int, exp: int) -> float:
    """multiple * 10**exp, as close to the decimal value as a float gets."""
    return float(multiple * 10**exp) if exp >= 0 else multiple / 10 ** (-exp)


def _ticks(lo: float, hi: float, step: tuple[int, int]) -> list[float]:
    mantissa, exp = step
    size = _value(mantissa, exp)
    first = math.ceil(lo / size - 1e-9)
    last = math.floor(hi / size + 1e-9)
    return [_value(i * mantissa, exp) + 0.0 for i in range(first, last + 1)]


def _outward(
    lo: float, hi: float, step: tuple[int, int], round_lo: bool, round_hi: bool
) -> tuple[float, float]:
    size = _value(*step)
    if round_lo:
        lo = _value(math.floor(lo / size + 1e-9) * step[0], step[1])
    if round_hi:
        hi = _value(math.ceil(hi / size - 1e-9) * step[0], step[1])
    return lo, hi


def _linear_axis(
    data: tuple[float, float] | None, fixed_lo: float | None, fixed_hi: float | None, target: int
) -> _Axis:
    data_lo, data_hi = data if data is not None else (0.0, 1.0)
    lo = fixed_lo if fixed_lo is not None else data_lo
    hi = fixed_hi if fixed_hi is not None else data_hi
    if hi <= lo:
        if fixed_lo is None and fixed_hi is None:
            pad = abs(lo) * 0.1 or 1.0
            lo, hi = lo - pad, hi + pad
        elif fixed_hi is None:
            hi = lo + (abs(lo) * 0.1 or 1.0)
        elif fixed_lo is None:
            lo = hi - (abs(hi) * 0.1 or 1.0)
        else:
            hi = lo + (abs(lo) * 0.1 or 1.0)
    step = _step(hi - lo, target)
    lo, hi = _outward(lo, hi, step, fixed_lo is None, fixed_hi is None)
    # rounding outward can widen the span enough to call for the next step
    step = _step(hi - lo, target)
    lo, hi = _outward(lo, hi, step, fixed_lo is None, fixed_hi is None)
    ticks = _ticks(lo, hi, step)
    return _Axis(lo, hi, ticks, _labels(ticks, _value(*step)))


def _nice_ceil(v: float) -> float:
    """The smallest 1-2-5 value at or above v > 0."""
    exp = math.floor(math.log10(v))
    for mantissa in (1, 2, 5, 10):
        if _value(mantissa, exp) >= v * (1 - 1e-12):
            return _value(mantissa, exp)
    return _value(1, exp + 1)  # pragma: no cover


def _nice_floor(v: float) -> float:
    """The largest 1-2-5 value at or below v, or 0 below 1 (the symlog scale is linear there)."""
    if v < 1:
        return 0.0
    exp = math.floor(math.log10(v))
    for mantissa in (5, 2, 1):
        if _value(mantissa, exp) <= v * (1 + 1e-12):
            return _value(mantissa, exp)
    return _value(1, exp)  # pragma: no cover


def _log_axis(data: tuple[float, float] | None, fixed_lo: float | None, fixed_hi: float | None) -> _Axis:
    data_lo, data_hi = data if data is not None else (0.0, 10.0)
    lo = max(0.0, fixed_lo if fixed_lo is not None else _nice_floor(data_lo))
    hi = fixed_hi if fixed_hi is not None else _nice_ceil(max(data_hi, lo, 1.0))
    if hi <= lo:
        hi = _nice_ceil(lo * 2 if lo > 0 else 1.0)
    values = [0.0] if lo == 0 else []
    for exp in range(math.floor(math.log10(max(lo, 1.0))) - 1, math.ceil(math.log10(hi)) + 1):
        values.extend(_value(m, exp) for m in (1, 2, 5))
    decades = [v for v in values if v == 0 or math.log10(v) == round(math.log10(v))]
    ticks = [v for v in values if lo - 1e-12 <= v <= hi * (1 + 1e-12) and (v >= 1 or v == 0)]
    if len(ticks) > 8:
        ticks = [v for v in decades if lo - 1e-12 <= v <= hi * (1 + 1e-12) and (v >= 1 or v == 0)]
    if len(ticks) < 3:  # less than a decade: plain 1-2-5 steps, on the log scale
        linear = _linear_axis((lo, hi), lo, hi, 5)
        return _Axis(lo, hi, linear.ticks, linear.labels, log=True)
    return _Axis(lo, hi, ticks, _labels(ticks, None), log=True)


def _panel_axis(panel: Panel, panel_height: int) -> _Axis:
    values = [y for s in panel.series for x, y in s.points if math.isfinite(x) and math.isfinite(y)]
    data = (min(values), max(values)) if values else None
    y_min = panel.y_min if panel.y_min is None or math.isfinite(panel.y_min) else None
    y_max = panel.y_max if panel.y_max is None or math.isfinite(panel.y_max) else None
    if panel.log_y:
        return _log_axis(data, y_min, y_max)
    return _linear_axis(data, y_min, y_max, target=max(2, min(8, (panel_height - 40) // 30)))


def _x_axis(panels: Sequence[Panel], bands: Sequence[Band], target: int) -> _Axis:
    xs = [x for panel in panels for s in panel.series for x, y in s.points if math.isfinite(x)]
    xs.extend(v for band in bands for v in (band.start, band.end) if math.isfinite(v))
    if not xs:
        return _linear_axis(None, None, None, target)
    lo, hi = min(xs), max(xs)
    axis = _linear_axis((lo, hi), None, None, target)
    if hi > lo and axis.hi - axis.lo > 1.05 * (hi - lo):
        # rounding out to whole steps would leave a wide empty margin: end the axis at the data
        axis = _linear_axis((lo, hi), lo, hi, target)
    return axis


def _labels(ticks: list[float], step: float | None) -> list[str]:
    """Tick labels with as many decimals as the step needs, thousands as k, M and G: on a linear axis
    (step given) all in the unit of the largest tick (k from 10,000 on); on a log axis each in its own."""
    top = max((abs(t) for t in ticks), default=0.0)
    labels = []
    for tick in ticks:
        divisor, suffix = 1.0, ""
        for d, s in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
            if (top >= (10 * d if d == 1e3 else d)) if step is not None else (abs(tick) >= d):
                divisor, suffix = d, s
                break
        unit = (step if step is not None else abs(tick)) / divisor
        decimals = max(0, -math.floor(math.log10(unit) + 1e-9)) if unit > 0 else 0
        text = f"{tick / divisor:,.{decimals}f}"
        labels.append("0" if float(text.replace(",", "")) == 0 else text + suffix)
    return labels


# --- pieces ---------------------------------------------------------------------------------------


def _series_colors(series: Sequence[Series]) -> list[str]:
    colors: list[str] = []
    following = 0
    for s in series:
        if s.color is None:
            colors.append(PALETTE[following % len(PALETTE)])
            following += 1
        else:
            colors.append(s.color)
    return colors


def _series(series: Series, color: str, px: _Pixel, py: _Pixel) -> list[str]:
    """A group per series: a polyline per unbroken run of points, a dot for a run of one."""
    runs: list[list[tuple[str, str]]] = [[]]
    for x, y in series.points:
        if not (math.isfinite(x) and math.isfinite(y)):
            if runs[-1]:
                runs.append([])
            continue
        point = (_f(px(x)), _f(py(y)))
        if not runs[-1] or runs[-1][-1] != point:
            runs[-1].append(point)
    # a run whose points all round to one pixel is a dot too; that is what it looks like
    lines = [run for run in runs if len(run) >= 2]
    dots = [run[0] for run in runs if len(run) == 1]
    c = _esc(color)
    out = [
        f'<g class="series" data-series="{_esc(series.name)}" fill="none" stroke="{c}" stroke-width="1.5" '
        f'stroke-linejoin="round" stroke-linecap="round">'
    ]
    out.append(f"<title>{_esc(series.name)}</title>")
    out.extend(f'<polyline points="{" ".join(f"{x},{y}" for x, y in run)}"/>' for run in lines)
    out.extend(f'<circle cx="{x}" cy="{y}" r="2" fill="{c}" stroke="none"/>' for x, y in dots)
    out.append("</g>")
    return out


def _legend(panel: Panel, plot_left: float, plot_right: float, top: float) -> tuple[list[str], int]:
    """The legend at the top right, on the panel title's line if it fits there, else in aligned columns
    (beside the title or below it, whichever takes fewer rows); returns it and its row count."""
    entries = [
        (s, color, 14 + 4 + _text_width(s.name, _LEGEND_SIZE))
        for s, color in zip(panel.series, _series_colors(panel.series), strict=True)
    ]
    spacing = 14.0
    full = plot_right - plot_left
    beside = full - _text_width(panel.title, _PANEL_TITLE_SIZE, bold=True) - 24
    # (row, x) of each entry
    places: list[tuple[int, float]] = []
    if sum(w for _, _, w in entries) + spacing * (len(entries) - 1) <= beside:
        x = plot_right - sum(w for _, _, w in entries) - spacing * (len(entries) - 1)
        for _, _, w in entries:
            places.append((0, x))
            x += w + spacing
        rows = 1
    elif entries:
        column = max(w for _, _, w in entries) + spacing

        def columns(room: float) -> int:
            return max(0, min(len(entries), int((room + spacing) // column)))

        next_to, below = columns(beside), max(1, columns(full))
        rows_next_to = -(-len(entries) // next_to) if next_to else 0
        rows_below = 1 + -(-len(entries) // below)
        first_row, count = (0, next_to) if next_to and rows_next_to <= rows_below else (1, below)
        left = max(plot_left, plot_right - count * column + spacing)
        places = [(first_row + i // count, left + (i % count) * column) for i in range(len(entries))]
        rows = places[-1][0] + 1
    else:
        rows = 1
    out = ['<g class="legend">']
    for (s, color, _), (row, x) in zip(entries, places, strict=True):
        baseline = top + 14 + row * _LEGEND_ROW
        c = _esc(color)
        out.append(
            f'<g class="legend-entry"><path d="M{_f(x)} {_f(baseline - 4)}h14" stroke="{c}" stroke-width="2.5"/>'
            f'<text x="{_f(x + 18)}" y="{_f(baseline)}" font-size="{_LEGEND_SIZE}" fill="{_TEXT}">'
            f"{_esc(s.name)}</text></g>"
        )
    out.append("</g>")
    return out, rows


def _band_colors(bands: Sequence[Band]) -> list[str]:
    """Bands whose labels start with the same word ("kill broker-1", "kill broker-2") share a colour."""
    prefixes: dict[str, str] = {}
    colors = []
    for band in bands:
        words = re.split(r"[\s:=/]+", band.label.strip(), maxsplit=1)
        prefix = words[0].lower() if words else ""
        if prefix not in prefixes:
            prefixes[prefix] = BAND_PALETTE[len(prefixes) % len(BAND_PALETTE)]
        colors.append(prefixes[prefix])
    return colors


def _band_span(band: Band, px: _Pixel, plot_left: float, plot_right: float) -> tuple[float, float]:
    """The band's pixel range within the plot; (1, 0) when it is outside or not a number."""
    if not (math.isfinite(band.start) and math.isfinite(band.end)):
        return 1.0, 0.0
    lo, hi = sorted((px(band.start), px(band.end)))
    lo, hi = max(lo, plot_left), min(hi, plot_right)
    return (lo, hi) if lo <= hi else (1.0, 0.0)


def _place_band_labels(
    bands: Sequence[Band], spans: list[tuple[float, float]], plot_left: float, plot_right: float
) -> tuple[list[tuple[float, int, str]], int]:
    """Each label centred over its band, in the first row where it overlaps no label before it."""
    order = sorted(
        (i for i, (lo, hi) in enumerate(spans) if lo <= hi and bands[i].label),
        key=lambda i: (spans[i][0], spans[i][1], i),
    )
    row_ends: list[float] = []
    placed: list[tuple[float, int, str]] = []
    for i in order:
        label = bands[i].label
        w = _text_width(label, _BAND_LABEL_SIZE)
        centre = (spans[i][0] + spans[i][1]) / 2
        x0 = min(max(centre - w / 2, plot_left + 2), plot_right - w - 2)
        row = next((r for r, end in enumerate(row_ends) if end + 6 <= x0), len(row_ends))
        if row == len(row_ends):
            row_ends.append(x0 + w)
        else:
            row_ends[row] = x0 + w
        placed.append((x0, row, label))
    return placed, len(row_ends)


# --- text -----------------------------------------------------------------------------------------

_NARROW = set("ijl|.,:;'!`")
_SEMI = set('frtI()[]{}- /\\"')
_WIDE = set("mwMW@%")


def _text_width(text: str, size: int, *, bold: bool = False) -> float:
    """An estimate of the width of text in a sans-serif font (a little generous: fonts differ)."""
    em = 0.0
    for ch in text:
        if ch in _NARROW:
            em += 0.28
        elif ch in _SEMI:
            em += 0.36
        elif ch in _WIDE:
            em += 0.86
        elif ch.isupper():
            em += 0.68
        else:
            em += 0.58
    return em * size * (1.12 if bold else 1.05)


def _esc(text: str) -> str:
    text = _INVALID_XML.sub("", text)
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")


def _f(v: float) -> str:
    """A coordinate to one decimal, without a trailing .0 or a negative zero."""
    text = f"{v:.1f}"
    if text.endswith(".0"):
        text = text[:-2]
    return "0" if text == "-0" else text
