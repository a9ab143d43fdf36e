"""The console's pages as HTML: pure functions of read-model values, with every value escaped.

Labels, annotations, titles, notes and names come from untrusted senders and operators: each one
goes through ``esc`` (``html.escape`` with quotes) before it reaches the page, so a label value of
``<script>`` shows as text. No page has inline script or style either: the gateway's
Content-Security-Policy allows scripts only from /console/static (``assets``), a second wall.
Nothing here reads a clock: the caller passes ``now_ms``.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from stormwatch.readmodel.mitigations import MitigationView
from stormwatch.readmodel.model import AlertView, Page, SilenceView
from stormwatch.readmodel.overview import WINDOWS, Overview
from stormwatch.schemas.common import Severity, ms_from_dt
from stormwatch.schemas.incident import Incident, IncidentEvent, IncidentState

__all__ = [
    "ACTIONS",
    "IncidentMarks",
    "ListQuery",
    "alerts_table",
    "approvals_page",
    "esc",
    "human_age",
    "incident_page",
    "incidents_page",
    "incidents_rows",
    "login_page",
    "message_page",
    "overview_page",
    "preview_fragment",
    "silences_page",
    "steps_table",
    "timeline_rows",
]

PREFIX = "/console"

ACTIONS = ("ack", "resolve", "assign", "annotate", "severity", "merge", "split", "join")
"""The incident actions the console offers, named as the CLI's commands are."""


def esc(value: object) -> str:
    """``value`` as HTML text, safe in element content and in quoted attributes."""
    return html.escape("" if value is None else str(value), quote=True)


def human_age(ms: int) -> str:
    """A duration as the largest two units: 45s, 3m 12s, 2h 5m, 4d 3h."""
    s = max(0, ms // 1000)
    days, rest = divmod(s, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    if minutes:
        return f"{minutes}m {seconds}s"
    return f"{seconds}s"


def _when(dt: datetime) -> str:
    return dt.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


@dataclass(frozen=True, slots=True)
class IncidentMarks:
    """What an incident's active alerts show now: how many fire, are silenced, are flapping."""

    alerts: int = 0
    silenced: int = 0
    flapping: int = 0


@dataclass(frozen=True, slots=True)
class ListQuery:
    """The incident list's filters, as the form sent them (states empty: every state)."""

    states: tuple[str, ...] = ()
    search: str = ""
    offset: int = 0
    limit: int = 50


# ---------------------------------------------------------------------------- layout


def _layout(title: str, body: str, *, user: str | None, csrf: str | None, page: str = "") -> str:
    nav = ""
    if user is not None and csrf is not None:
        nav = (
            '<nav><a href="/console/">Incidents</a> <a href="/console/approvals">Approvals</a> '
            '<a href="/console/silences">Silences</a> <a href="/console/overview">Overview</a>'
            f'<span class="who">signed in as <b>{esc(user)}</b></span>'
            '<form method="post" action="/console/logout" class="inline">'
            f'<input type="hidden" name="csrf" value="{esc(csrf)}">'
            '<button type="submit">Sign out</button></form></nav>'
        )
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(title)} · stormwatch</title>"
        '<link rel="stylesheet" href="/console/static/console.css">'
        '<script src="/console/static/console.js" defer></script>'
        f'</head><body data-page="{esc(page)}">'
        f'<header><a class="brand" href="/console/">stormwatch</a>{nav}</header>'
        f'<main>{body}</main><div id="live" class="live" aria-live="polite"></div></body></html>\n'
    )


def message_page(title: str, text: str, *, user: str | None = None, csrf: str | None = None) -> str:
    """A page that only says something (not found, not ready, refused)."""
    return _layout(title, f'<h1>{esc(title)}</h1><p class="message">{esc(text)}</p>', user=user, csrf=csrf)


def login_page(*, error: str = "", need_token: bool, next_path: str = "/console/") -> str:
    """The sign-in form: the gateway's bearer token (when it has one) and the operator's name,
    which every action the session takes records in the audit log."""
    token = (
        '<label>Bearer token <input type="password" name="token" autocomplete="current-password" '
        "required></label>"
        if need_token
        else '<p class="hint">This gateway has no bearer token (loopback only): give your name.</p>'
    )
    err = f'<p class="error" role="alert">{esc(error)}</p>' if error else ""
    body = (
        '<h1>Sign in</h1><form method="post" action="/console/login" class="login">'
        f"{err}{token}"
        '<label>Your name <input type="text" name="name" autocomplete="username" required '
        'maxlength="64"></label>'
        f'<input type="hidden" name="next" value="{esc(next_path)}">'
        '<button type="submit">Sign in</button></form>'
    )
    return _layout("Sign in", body, user=None, csrf=None, page="login")


# ---------------------------------------------------------------------------- incidents


def _root_cell(incident: Incident) -> str:
    if incident.linked_into:
        target = esc(incident.linked_into)
        return f'linked into <a href="/console/incidents/{target}">{target}</a>'
    root = incident.root_cause
    text = esc(f"{root.kind}/{root.name}") if root is not None else "-"
    if incident.members:
        text += f' <span class="muted">(+{len(incident.members)} linked)</span>'
    return text


def _mark_badges(incident: Incident, marks: IncidentMarks | None) -> str:
    badges = []
    if marks is not None and marks.silenced:
        badges.append(f'<span class="badge silenced">silenced {marks.silenced}</span>')
    if marks is not None and marks.flapping:
        badges.append(f'<span class="badge flapping">flapping {marks.flapping}</span>')
    if incident.merged_into:
        badges.append('<span class="badge">merged</span>')
    return " ".join(badges)


def incidents_rows(incidents: Sequence[Incident], marks: Mapping[str, IncidentMarks], now_ms: int) -> str:
    """The ``<tbody>`` rows of the incident list (also what a live update swaps in)."""
    if not incidents:
        return '<tr><td colspan="9" class="empty">No incidents match.</td></tr>'
    rows = []
    for i in incidents:
        iid = esc(i.incident_id)
        mark = marks.get(i.incident_id)
        rows.append(
            f'<tr data-incident="{iid}" data-seq="{i.last_seq}">'
            f'<td><a href="/console/incidents/{iid}">{iid}</a></td>'
            f'<td><span class="state {esc(i.state.value)}">{esc(i.state.value)}</span></td>'
            f'<td><span class="sev {esc(i.severity.value)}">{esc(i.severity.value)}</span></td>'
            f"<td>{esc(i.title)}</td>"
            f"<td>{_root_cell(i)}</td>"
            f'<td class="num">{i.firing_count}/{i.alert_count}</td>'
            f'<td title="{esc(_when(i.opened_at))}">{esc(human_age(now_ms - ms_from_dt(i.opened_at)))}</td>'
            f"<td>{esc(i.assignee or '-')}</td>"
            f'<td class="marks">{_mark_badges(i, mark)}</td>'
            "</tr>"
        )
    return "".join(rows)


def _pager(query: ListQuery, total: int) -> str:
    """Previous / next as GET forms carrying the filters (no URLs built by hand)."""

    def button(label: str, offset: int) -> str:
        hidden = "".join(f'<input type="hidden" name="state" value="{esc(s)}">' for s in query.states) + (
            f'<input type="hidden" name="q" value="{esc(query.search)}">' if query.search else ""
        )
        return (
            f'<form method="get" action="/console/" class="inline">{hidden}'
            f'<input type="hidden" name="offset" value="{offset}">'
            f'<button type="submit">{label}</button></form>'
        )

    parts = []
    if query.offset > 0:
        parts.append(button("← Newer", max(0, query.offset - query.limit)))
    end = min(total, query.offset + query.limit)
    parts.append(f"<span>{query.offset + 1 if total else 0}-{end} of {total}</span>")
    if end < total:
        parts.append(button("Older →", query.offset + query.limit))
    return f'<div class="pager">{" ".join(parts)}</div>'


def incidents_page(
    page: Page[Incident],
    marks: Mapping[str, IncidentMarks],
    query: ListQuery,
    now_ms: int,
    *,
    user: str,
    csrf: str,
) -> str:
    states = "".join(
        f'<label class="check"><input type="checkbox" name="state" value="{s.value}"'
        f"{' checked' if s.value in query.states else ''}> {s.value}</label>"
        for s in IncidentState
    )
    filters = (
        '<form method="get" action="/console/" class="filters" id="filters">'
        f'<input type="search" name="q" value="{esc(query.search)}" '
        'placeholder="search id, title, group, rule, assignee">'
        f'{states}<button type="submit">Filter</button></form>'
    )
    table = (
        '<table class="incidents"><thead><tr><th>Incident</th><th>State</th><th>Severity</th>'
        "<th>Title</th><th>Root cause</th><th>Firing/alerts</th><th>Age</th><th>Assignee</th>"
        f'<th>Marks</th></tr></thead><tbody id="incident-rows">'
        f"{incidents_rows(page.items, marks, now_ms)}</tbody></table>"
    )
    body = f"<h1>Incidents</h1>{filters}{table}{_pager(query, page.total)}"
    return _layout("Incidents", body, user=user, csrf=csrf, page="incidents")


# ---------------------------------------------------------------------------- one incident


def _labels(labels: Mapping[str, str]) -> str:
    return " ".join(
        f'<span class="label"><span class="k">{esc(k)}</span>=<span class="v">{esc(v)}</span></span>'
        for k, v in sorted(labels.items())
    )


def _cause(event: IncidentEvent) -> str:
    extras = [
        f"{k}={v}" for k, v in event.details.items() if isinstance(v, str | int | float | bool) and v != ""
    ]
    return event.cause + (f" ({', '.join(extras)})" if extras else "")


def timeline_rows(events: Iterable[IncidentEvent]) -> str:
    """The ``<tbody>`` rows of an incident's timeline, oldest first."""
    rows = []
    for e in events:
        states = (
            e.to_state.value
            if e.from_state is e.to_state
            else f"{e.from_state.value if e.from_state else '-'} → {e.to_state.value}"
        )
        rows.append(
            f'<tr data-seq="{e.seq}" data-type="{esc(e.type.value)}"><td class="num">{e.seq}</td>'
            f"<td>{esc(_when(e.at))}</td><td>{esc(e.type.value)}</td><td>{esc(states)}</td>"
            f"<td>{esc(e.actor)}</td><td>{len(e.alerts) or ''}</td><td>{esc(_cause(e))}</td></tr>"
        )
    return "".join(rows) or '<tr><td colspan="7" class="empty">No events read yet.</td></tr>'


def alerts_table(alerts: Sequence[AlertView], now_ms: int, *, table_id: str = "alerts") -> str:
    """Active alerts with their labels, annotations and marks (silenced, inhibited, flapping)."""
    if not alerts:
        return f'<p class="empty" id="{esc(table_id)}">No active alerts.</p>'
    rows = []
    for a in alerts:
        marks = []
        if a.silenced_by:
            marks.append(
                '<span class="badge silenced" title="silenced by '
                f'{esc(", ".join(a.silenced_by))}">silenced</span>'
            )
        if a.inhibited_by:
            marks.append(
                f'<span class="badge inhibited">inhibited by {esc(", ".join(a.inhibited_by))}</span>'
            )
        if a.muted_by:
            marks.append('<span class="badge flapping">flapping</span>')
        annotations = "".join(f"<dt>{esc(k)}</dt><dd>{esc(v)}</dd>" for k, v in sorted(a.annotations.items()))
        rows.append(
            f'<tr data-fingerprint="{esc(a.fingerprint)}" data-state="{esc(a.state)}">'
            f"<td><code>{esc(a.fingerprint)}</code></td>"
            f'<td><span class="sev {esc(a.severity)}">{esc(a.severity)}</span></td>'
            f'<td class="labels">{_labels(a.labels)}</td>'
            f'<td><dl class="annotations">{annotations}</dl></td>'
            f"<td>{esc(human_age(now_ms - a.starts_ms))}</td>"
            f'<td class="marks">{" ".join(marks)}</td></tr>'
        )
    return (
        f'<table class="alerts" id="{esc(table_id)}"><thead><tr><th>Fingerprint</th><th>Severity</th>'
        "<th>Labels</th><th>Annotations</th><th>Firing for</th><th>Marks</th></tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table>"
    )


_INTO = '<input type="text" name="into" placeholder="other incident id" required maxlength="64">'


def _action_form(incident_id: str, action: str, label: str, csrf: str, field: str = "") -> str:
    return (
        f'<form method="post" action="/console/incidents/{esc(incident_id)}/{action}" '
        f'class="action" data-action="{action}">'
        f'<input type="hidden" name="csrf" value="{esc(csrf)}">{field}'
        f'<button type="submit" name="do" value="{action}">{label}</button></form>'
    )


def _decision_forms(view: MitigationView, csrf: str, back: str) -> str:
    """Approve (with an optional note) and deny (with a reason) of one awaiting step."""
    cid = esc(view.command_id)
    hidden = f'<input type="hidden" name="csrf" value="{esc(csrf)}"><input type="hidden" name="next" value="{esc(back)}">'
    return (
        f'<form method="post" action="/console/approvals/{cid}/approve" class="decision" '
        f'data-decision="approve" data-command="{cid}">{hidden}'
        '<input type="text" name="note" placeholder="note (optional)" maxlength="2000">'
        '<button type="submit">Approve</button></form>'
        f'<form method="post" action="/console/approvals/{cid}/deny" class="decision" '
        f'data-decision="deny" data-command="{cid}">{hidden}'
        '<input type="text" name="reason" placeholder="reason" required maxlength="2000">'
        '<button type="submit">Deny</button></form>'
    )


def steps_table(
    steps: Sequence[MitigationView],
    now_ms: int,
    *,
    csrf: str,
    back: str,
    titles: Mapping[str, str] | None = None,
    table_id: str = "steps",
) -> str:
    """Mitigation steps with their status; the ones awaiting approval carry approve / deny forms.

    With ``titles`` (the approvals page) each row also names its incident and that incident's title.
    """
    if not steps:
        empty = "No step is awaiting approval." if titles is not None else "No mitigation steps."
        return f'<p class="empty" id="{esc(table_id)}">{empty}</p>'
    rows = []
    for v in steps:
        waiting = v.awaiting(now_ms)
        status = v.status.value
        if v.status.value == "awaiting_approval" and not waiting:
            status = "awaiting_approval (expired)"
        when = (
            f"expires in {human_age(v.expires_ms - now_ms)}"
            if waiting and v.expires_ms is not None
            else esc(v.reason or "")
        )
        incident = ""
        if titles is not None:
            iid = esc(v.incident_id)
            incident = (
                f'<td><a href="/console/incidents/{iid}">{iid}</a> {esc(titles.get(v.incident_id, ""))}</td>'
            )
        rows.append(
            f'<tr data-command="{esc(v.command_id)}" data-status="{esc(v.status.value)}">'
            f"<td><code>{esc(v.command_id)}</code></td>{incident}"
            f"<td>{esc(v.workflow)}/{esc(v.step)}</td><td>{esc(v.action)}</td>"
            f"<td>{esc(v.target or '-')}</td>"
            f'<td><span class="step {esc(v.status.value)}">{esc(status)}</span></td>'
            f"<td>{esc(v.actor)}</td><td>{esc(_when_ms(v.updated_ms))}</td><td>{when}</td>"
            f'<td class="decide">{_decision_forms(v, csrf, back) if waiting else ""}</td></tr>'
        )
    head = "<th>Incident</th>" if titles is not None else ""
    return (
        f'<table class="steps" id="{esc(table_id)}"><thead><tr><th>Command</th>{head}'
        "<th>Workflow/step</th><th>Action</th><th>Target</th><th>Status</th><th>By</th><th>At</th>"
        f"<th></th><th></th></tr></thead><tbody>{''.join(rows)}</tbody></table>"
    )


def _when_ms(ms: int) -> str:
    return _when(datetime.fromtimestamp(ms / 1000, UTC))


def incident_page(
    incident: Incident,
    events: Sequence[IncidentEvent],
    alerts: Sequence[AlertView],
    now_ms: int,
    *,
    user: str,
    csrf: str,
    steps: Sequence[MitigationView] = (),
) -> str:
    iid = incident.incident_id
    facts = [
        ("State", f'<span class="state {esc(incident.state.value)}">{esc(incident.state.value)}</span>'),
        (
            "Severity",
            f'<span class="sev {esc(incident.severity.value)}">{esc(incident.severity.value)}</span>',
        ),
        ("Rule", esc(incident.rule)),
        ("Group", _labels(incident.group_labels)),
        ("Alerts firing", f"{incident.firing_count} of {incident.alert_count}"),
        (
            "Opened",
            f"{esc(_when(incident.opened_at))} ({esc(human_age(now_ms - ms_from_dt(incident.opened_at)))} ago)",
        ),
        ("Assignee", esc(incident.assignee or "-")),
        ("Root cause", _root_cell(incident)),
    ]
    if incident.merged_into:
        facts.append(
            (
                "Merged into",
                f'<a href="/console/incidents/{esc(incident.merged_into)}">{esc(incident.merged_into)}</a>',
            )
        )
    if incident.members:
        facts.append(
            (
                "Members",
                " ".join(f'<a href="/console/incidents/{esc(m)}">{esc(m)}</a>' for m in incident.members),
            )
        )
    for note in incident.notes:
        facts.append(("Note", esc(note)))
    dl = "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in facts)
    severities = "".join(f'<option value="{s.value}">{s.value}</option>' for s in Severity)
    actions = (
        '<div class="actions">'
        + _action_form(iid, "ack", "Acknowledge", csrf)
        + _action_form(iid, "resolve", "Resolve", csrf)
        + _action_form(
            iid,
            "assign",
            "Assign",
            csrf,
            f'<input type="text" name="assignee" placeholder="assignee" required maxlength="128" '
            f'value="{esc(user)}">',
        )
        + _action_form(
            iid,
            "annotate",
            "Annotate",
            csrf,
            '<input type="text" name="note" placeholder="note" required maxlength="2000">',
        )
        + _action_form(iid, "severity", "Set severity", csrf, f'<select name="level">{severities}</select>')
        + _action_form(iid, "merge", "Merge into", csrf, _INTO)
        + _action_form(iid, "join", "Link into", csrf, _INTO)
        + (_action_form(iid, "split", "Split out", csrf) if incident.linked_into else "")
        + '<p class="status" id="action-status" role="status"></p></div>'
    )
    timeline = (
        '<table class="timeline"><thead><tr><th>#</th><th>At</th><th>Event</th><th>State</th>'
        f'<th>Actor</th><th>Alerts</th><th>Cause</th></tr></thead><tbody id="timeline-rows">'
        f"{timeline_rows(events)}</tbody></table>"
    )
    body = (
        f'<h1 data-incident="{esc(iid)}" data-seq="{incident.last_seq}">{esc(iid)}: {esc(incident.title)}</h1>'
        f'<dl class="facts" id="facts">{dl}</dl>{actions}'
        f"<h2>Mitigation steps</h2>{steps_table(steps, now_ms, csrf=csrf, back=f'/console/incidents/{iid}')}"
        f"<h2>Timeline</h2>{timeline}<h2>Alerts</h2>"
        f'<div id="incident-alerts">{alerts_table(alerts, now_ms)}</div>'
    )
    return _layout(f"{iid} {incident.title}", body, user=user, csrf=csrf, page="incident")


# ---------------------------------------------------------------------------- approvals and overview


def approvals_page(
    steps: Sequence[MitigationView], titles: Mapping[str, str], now_ms: int, *, user: str, csrf: str
) -> str:
    """Every mitigation step waiting for an operator, the soonest to expire first."""
    table = steps_table(
        steps, now_ms, csrf=csrf, back="/console/approvals", titles=titles, table_id="approvals"
    )
    body = (
        f'<h1>Pending approvals</h1><p class="hint">{len(steps)} step(s) wait for an answer. An answer '
        "is recorded with your name; a step nobody answers expires and is not run.</p>"
        f'<div id="approvals-list">{table}</div>'
    )
    return _layout("Pending approvals", body, user=user, csrf=csrf, page="approvals")


def _duration(ms: float | None) -> str:
    return "-" if ms is None else human_age(int(ms))


def _mean_median(mean: float | None, p50: float | None) -> str:
    return "-" if mean is None else f"{_duration(mean)}; {_duration(p50)}"


def overview_page(view: Overview, window: str, *, user: str, csrf: str) -> str:
    """Storm suppression at a glance over the incidents opened in the chosen window."""
    choices = "".join(
        f'<option value="{esc(name)}"{" selected" if name == window else ""}>last {esc(name)}</option>'
        for name in WINDOWS
    )
    picker = (
        '<form method="get" action="/console/overview" class="filters" id="window-form">'
        f'<label>Window <select name="window">{choices}</select></label>'
        '<button type="submit">Show</button></form>'
    )
    ratio = "-" if view.ratio is None else f"{view.ratio:,.1f} : 1"
    tiles = [
        ("notifications", "Alert notifications in", f"{view.notifications:,}"),
        ("distinct", "Distinct alerts", f"{view.distinct_alerts:,}"),
        ("incidents", "Incidents opened", f"{view.incidents:,}"),
        ("after-linking", "After merging and linking", f"{view.after_linking:,}"),
        ("ratio", "Suppression (notifications per incident)", ratio),
        ("open", "Still open", f"{view.open_now:,}"),
        (
            "mtta",
            f"MTTA (mean; median) of {view.acknowledged}",
            _mean_median(view.mtta_ms, view.mtta_p50_ms),
        ),
        (
            "mttr",
            f"MTTR (mean; median) of {view.resolved}",
            _mean_median(view.mttr_ms, view.mttr_p50_ms),
        ),
    ]
    cards = "".join(
        f'<div class="tile" data-tile="{key}"><div class="tile-label">{esc(label)}</div>'
        f'<div class="tile-value">{esc(value)}</div></div>'
        for key, label, value in tiles
    )
    body = (
        f"<h1>Storm suppression</h1>{picker}"
        f'<p class="hint">Incidents opened from {esc(_when_ms(view.since_ms))} to '
        f"{esc(_when_ms(view.until_ms))}, from the audit log. Notifications count each distinct alert "
        "once plus every re-send folded and every notification held back (silenced, inhibited, "
        "flapping).</p>"
        f'<div class="tiles" id="overview">{cards}</div>'
    )
    return _layout("Overview", body, user=user, csrf=csrf, page="overview")


# ---------------------------------------------------------------------------- silences


def preview_fragment(alerts: Sequence[AlertView], total: int, now_ms: int, *, error: str = "") -> str:
    """The matcher preview: the active alerts a silence with these matchers would mute."""
    if error:
        return f'<p class="error" role="alert">{esc(error)}</p>'
    more = f" (showing {len(alerts)})" if total > len(alerts) else ""
    return (
        f'<p class="preview-count" data-count="{total}">{total} active alert(s) would be muted{more}.</p>'
        + alerts_table(alerts, now_ms, table_id="preview-alerts")
    )


@dataclass(frozen=True, slots=True)
class SilenceForm:
    """What the create form holds (kept when the server refuses it)."""

    matchers: str = ""
    duration: str = "2h"
    comment: str = ""


def silences_page(
    views: Sequence[SilenceView],
    now_ms: int,
    *,
    user: str,
    csrf: str,
    form: SilenceForm | None = None,
    error: str = "",
    preview: str = "",
) -> str:
    form = form or SilenceForm()
    rows = []
    for v in views:
        s = v.silence
        sid = esc(s.silence_id)
        expire = (
            ""
            if v.state == "expired"
            else (
                f'<form method="post" action="/console/silences/{sid}/expire" class="inline">'
                f'<input type="hidden" name="csrf" value="{esc(csrf)}">'
                '<button type="submit">Expire</button></form>'
            )
        )
        matchers = " ".join(f"<code>{esc(m)}</code>" for m in s.matchers)
        rows.append(
            f'<tr data-silence="{sid}" data-state="{esc(v.state)}"><td><code>{sid}</code></td>'
            f'<td><span class="state {esc(v.state)}">{esc(v.state)}</span></td><td>{matchers}</td>'
            f"<td>{esc(_when(s.starts_at))}</td><td>{esc(_when(s.ends_at))}</td>"
            f"<td>{esc(s.created_by)}</td><td>{esc(s.comment)}</td><td>{expire}</td></tr>"
        )
    table = (
        '<table class="silences" id="silences"><thead><tr><th>Id</th><th>State</th><th>Matchers</th>'
        "<th>Starts</th><th>Ends</th><th>By</th><th>Comment</th><th></th></tr></thead><tbody>"
        + ("".join(rows) or '<tr><td colspan="8" class="empty">No silences.</td></tr>')
        + "</tbody></table>"
    )
    err = f'<p class="error" role="alert">{esc(error)}</p>' if error else ""
    create = (
        '<form method="post" action="/console/silences" class="silence-form" id="silence-form">'
        f'{err}<input type="hidden" name="csrf" value="{esc(csrf)}">'
        '<label>Matchers, one a line (name="value", name!="value", name=~"regex", name!~"regex")'
        f'<textarea name="matchers" rows="3" required>{esc(form.matchers)}</textarea></label>'
        f'<label>Duration <input type="text" name="duration" value="{esc(form.duration)}" required></label>'
        f'<label>Comment <input type="text" name="comment" value="{esc(form.comment)}" required></label>'
        '<div class="buttons"><button type="submit" formaction="/console/silences/preview" '
        'id="preview-button">Preview</button> <button type="submit" id="create-button">Create silence</button></div>'
        f'</form><div id="preview">{preview}</div>'
    )
    body = f"<h1>Silences</h1><h2>New silence</h2>{create}<h2>All silences</h2>{table}"
    return _layout("Silences", body, user=user, csrf=csrf, page="silences")
