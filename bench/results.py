"""Result arithmetic and presentation: percentiles, rates, floor ratios, targets, the table.

Pure functions on plain dicts (the JSON the harness prints), so they are unit-tested without Kafka.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

__all__ = [
    "TARGETS",
    "check_targets",
    "percentile",
    "percentiles",
    "process_figures",
    "rate",
    "ratio",
    "render",
]


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of unsorted ``values``; NaN when empty."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return float(ordered[min(rank, len(ordered)) - 1])


def percentiles(values: Sequence[float]) -> dict[str, float]:
    ordered = sorted(values)
    if not ordered:
        return {"n": 0}
    return {
        "n": len(ordered),
        "p50": percentile(ordered, 50),
        "p95": percentile(ordered, 95),
        "p99": percentile(ordered, 99),
        "max": float(ordered[-1]),
        "mean": sum(ordered) / len(ordered),
    }


def rate(count: float, seconds: float) -> float:
    return count / seconds if seconds > 0 else 0.0


def ratio(value: float | None, floor: float | None) -> float | None:
    """``value / floor``, None when either is missing or the floor is zero."""
    if value is None or floor is None or floor == 0 or math.isnan(floor):
        return None
    return value / floor


def process_figures(alerts: int, cpu_s: float, wall_s: float, rss: int, peak_rss: int) -> dict[str, Any]:
    """What one process did with ``alerts`` alerts: its rates by wall and by CPU time."""
    return {
        "cpu_s": round(cpu_s, 3),
        "wall_s": round(wall_s, 3),
        "alerts_per_s": round(rate(alerts, wall_s)),
        "alerts_per_cpu_s": round(rate(alerts, cpu_s)),
        "cpu_us_per_alert": round(cpu_s / alerts * 1e6, 2) if alerts else None,
        "utilization": round(cpu_s / wall_s, 3) if wall_s > 0 else None,
        "rss": rss,
        "peak_rss": peak_rss,
    }


# Each target: (workload, name, JSON path of the value, comparison, threshold, unit).
TARGETS: tuple[tuple[str, str, str, str, float, str], ...] = (
    (
        "storm-batched",
        "alerts/s end to end, one core per process",
        "pipeline.one_core_alerts_per_s",
        ">=",
        50_000,
        "alerts/s",
    ),
    (
        "storm-single",
        "alerts/s end to end, one core per process",
        "pipeline.one_core_alerts_per_s",
        ">=",
        20_000,
        "alerts/s",
    ),
    (
        "steady",
        "p99 latency beyond group_wait (incident record time)",
        "latency.record_ms.p99",
        "<",
        250,
        "ms",
    ),
    (
        "high-cardinality",
        "correlator bytes per active fingerprint",
        "memory.bytes_per_fingerprint",
        "<=",
        1024,
        "B",
    ),
    ("high-cardinality", "restart-to-ready", "recovery.restart_to_ready_s", "<", 30, "s"),
    (
        "storm-http",
        "CPU per alert, stormwatch (gateway + ingest + correlator) / Alertmanager",
        "like_for_like.cpu_ratio",
        "<=",
        0.5,
        "x",
    ),
    (
        "storm-http",
        "alerts/s wall, stormwatch (to the correlator caught up) / Alertmanager",
        "like_for_like.wall_ratio",
        ">=",
        1,
        "x",
    ),
)


def _lookup(result: dict[str, Any], path: str) -> Any:
    node: Any = result
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def check_targets(result: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's targets that apply to this result's workload, each with its value and verdict."""
    checks = []
    for workload, name, path, op, threshold, unit in TARGETS:
        if workload != result.get("workload"):
            continue
        value = _lookup(result, path)
        met = None
        if isinstance(value, int | float) and not math.isnan(value):
            met = value >= threshold if op == ">=" else value < threshold if op == "<" else value <= threshold
        checks.append(
            {"target": f"{name} {op} {threshold:g} {unit}", "path": path, "value": value, "met": met}
        )
    return checks


# ---------------------------------------------------------------- the table


def _num(value: Any, digits: int = 0) -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and math.isnan(value):
        return "-"
    if isinstance(value, int | float):
        return f"{value:,.{digits}f}"
    return str(value)


def _x(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def _mib(value: Any) -> str:
    return "-" if not isinstance(value, int | float) else f"{value / 1048576:,.0f} MiB"


def render(result: dict[str, Any]) -> str:
    """A human-readable table of one workload's result (the JSON holds everything)."""
    rows: list[tuple[str, str, str]] = []
    floor = result.get("floor") or {}
    pipe = result.get("pipeline") or {}
    ratios = result.get("floor_ratios") or {}

    def add(label: str, value: str, vs_floor: str = "") -> None:
        rows.append((label, value, vs_floor))

    sent = result.get("sent") or {}
    add("alerts sent", _num(sent.get("alerts")))
    if sent.get("records") is not None:
        add(
            "records / distinct alerts / groups",
            f"{_num(sent.get('records'))} / {_num(sent.get('fingerprints'))} / {_num(sent.get('groups'))}",
        )
    if sent.get("resend_ratio") is not None:
        add("re-send ratio", f"{sent['resend_ratio']:.3f}")
    if floor:
        add("floor: consume+parse alerts/s", _num(floor.get("alerts_per_s")))
        add("floor: alerts per CPU-second", _num(floor.get("alerts_per_cpu_s")))
    for stage in ("gateway", "ingest", "correlator"):
        figures = pipe.get(stage)
        if not figures:
            continue
        floored = stage != "gateway"  # the floor reads the raw topic: no figure before it
        add(
            f"{stage}: alerts/s (wall)",
            _num(figures.get("alerts_per_s")),
            _x(ratios.get(f"{stage}_wall")) if floored else "",
        )
        add(
            f"{stage}: alerts per CPU-second",
            _num(figures.get("alerts_per_cpu_s")),
            _x(ratios.get(f"{stage}_cpu")) if floored else "",
        )
        add(f"{stage}: CPU us per alert", _num(figures.get("cpu_us_per_alert"), 2))
        add(
            f"{stage}: peak RSS",
            _mib(figures.get("peak_rss")),
            _x(ratios.get(f"{stage}_peak_rss")) if floored else "",
        )
    if pipe.get("accepted_alerts_per_s") is not None:
        add("gateway: alerts/s answered (first request to last answer)", _num(pipe["accepted_alerts_per_s"]))
    if pipe.get("alerts_per_s") is not None:
        add("end to end: alerts/s (wall)", _num(pipe.get("alerts_per_s")), _x(ratios.get("pipeline_wall")))
    if pipe.get("gateway") and pipe.get("cpu_us_per_alert") is not None:
        add("gateway + ingest + correlator: CPU us per alert", _num(pipe["cpu_us_per_alert"], 2))
    client = result.get("client") or {}
    if client:
        add(
            f"HTTP client ({client.get('clients')} connections): CPU us per alert, cores busy",
            f"{_num(client.get('cpu_us_per_alert'), 2)}, {_num(client.get('utilization'), 2)}",
        )
    if pipe.get("one_core_alerts_per_s") is not None:
        add(
            "end to end: alerts/s, one core per process",
            _num(pipe.get("one_core_alerts_per_s")),
            _x(ratios.get("pipeline_one_core")),
        )
    latency = result.get("latency") or {}
    for key, label in (
        ("visible_ms", "latency beyond group_wait (consumer)"),
        ("record_ms", "latency beyond group_wait (record ts)"),
    ):
        lat = latency.get(key)
        if lat and lat.get("n"):
            add(
                f"{label} p50/p95/p99 ms",
                f"{lat['p50']:.0f} / {lat['p95']:.0f} / {lat['p99']:.0f}",
                _x(ratios.get(f"latency_{key}_p99")),
            )
    memory = result.get("memory") or {}
    if memory.get("bytes_per_fingerprint") is not None:
        add("correlator bytes per active fingerprint", _num(memory["bytes_per_fingerprint"]))
        add("active fingerprints", _num(memory.get("active_fingerprints")))
    incidents = result.get("incidents") or {}
    if incidents:
        add("incident events emitted", _num(incidents.get("events")))
        add("storm suppression ratio (alerts in / events out)", _num(incidents.get("suppression_ratio"), 1))
    late = (result.get("correlator_metrics") or {}).get("stormwatch_alerts_late_total")
    if late is not None:  # the correlator judged them on arrival: a late alert skipped the reorder buffer
        add("late alerts (correlator)", _num(late))
    recovery = result.get("recovery") or {}
    if recovery:
        add("restart-to-ready (SIGKILL, restart)", f"{_num(recovery.get('restart_to_ready_s'), 2)} s")
        add("  of which state restore", f"{_num(recovery.get('restore_s'), 2)} s")
    am = result.get("alertmanager") or {}
    if am:
        add("alertmanager: alerts/s", _num(am.get("alerts_per_s")))
        add("alertmanager: CPU us per alert", _num(am.get("cpu_us_per_alert"), 2))
        add("alertmanager: peak RSS", _mib(am.get("peak_rss")))
        add("alertmanager: notifications", _num(am.get("notifications")))
    load = result.get("load") or {}
    if load:
        add(
            "load average before / max during",
            f"{_num(load.get('before'), 2)} / {_num(load.get('max_during'), 2)}",
        )
    width = max(len(r[0]) for r in rows) if rows else 10
    vwidth = max(len(r[1]) for r in rows) if rows else 10
    lines = [
        f"stormwatch bench {result.get('workload')}",
        f"{'figure':<{width}}  {'value':>{vwidth}}  vs floor",
    ]
    lines += [f"{label:<{width}}  {value:>{vwidth}}  {vs}".rstrip() for label, value, vs in rows]
    if result.get("like_for_like"):
        lines += ["", *_like_for_like_table(result["like_for_like"])]
    for check in result.get("targets") or []:
        verdict = {True: "MET", False: "NOT MET", None: "not measured"}[check["met"]]
        lines.append(f"target: {check['target']}: {_num(check['value'], 2)} -> {verdict}")
    return "\n".join(lines)


def _like_for_like_table(both: dict[str, Any]) -> list[str]:
    """storm-http: stormwatch from its gateway on and Alertmanager, fed by the same HTTP requests."""
    sw, am = both["stormwatch"], both["alertmanager"]
    rows = [
        ("alerts/s (wall) *", _num(sw.get("alerts_per_s")), _num(am.get("alerts_per_s"))),
        (
            "alerts/s answered (first request to last answer)",
            _num(sw.get("accepted_alerts_per_s")),
            _num(am.get("alerts_per_s")),
        ),
        ("CPU us per alert: gateway", _num(sw.get("gateway_cpu_us_per_alert"), 2), ""),
        ("CPU us per alert: ingest", _num(sw.get("ingest_cpu_us_per_alert"), 2), ""),
        ("CPU us per alert: correlator", _num(sw.get("correlator_cpu_us_per_alert"), 2), ""),
        ("CPU us per alert: total", _num(sw.get("cpu_us_per_alert"), 2), _num(am.get("cpu_us_per_alert"), 2)),
        (
            "HTTP client CPU us per alert (not in the total)",
            _num(sw.get("client_cpu_us_per_alert"), 2),
            _num(am.get("client_cpu_us_per_alert"), 2),
        ),
        ("peak RSS (sum of processes)", _mib(sw.get("peak_rss")), _mib(am.get("peak_rss"))),
        ("incident events / webhook calls **", _num(sw.get("notifications")), _num(am.get("notifications"))),
    ]
    width = max(len(r[0]) for r in rows)
    cw = max(12, *(len(r[1]) for r in rows), *(len(r[2]) for r in rows))
    lines = [
        f"like for like: the same {both.get('requests'):,} POSTs to /api/v2/alerts, {both.get('clients')} clients",
        f"{'figure':<{width}}  {'stormwatch':>{cw}}  {'alertmanager':>{cw}}",
    ]
    lines += [f"{label:<{width}}  {a:>{cw}}  {b:>{cw}}".rstrip() for label, a, b in rows]
    lines.append(
        f"stormwatch / alertmanager: CPU per alert {_x(both.get('cpu_ratio'))}, alerts/s {_x(both.get('wall_ratio'))}"
    )
    lines.append(
        "* stormwatch: first request to the correlator having committed everything; alertmanager: to the last answer"
    )
    lines.append("** both counted within group_wait + 10 s of the first request")
    return lines
