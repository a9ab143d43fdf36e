"""The correlation engine, driven record by record with no broker."""

from __future__ import annotations

from stormwatch.schemas.commands import OperatorAction
from stormwatch.schemas.common import Severity
from stormwatch.schemas.incident import AlertChangeKind, IncidentState
from stormwatch.schemas.matchers import Matcher
from stormwatch.schemas.silence import Silence
from stormwatch.streams.core.engine import PARTITION_KEY, QUIET_AFTER_MS, QUIET_PERSIST_MS
from tests.kit.engine import Driver, at, config, iso, note

FAST = """
defaults:
  group_wait: 30s
  group_interval: 5m
  resolve_timeout: 5m
  reopen_window: 10m
  close_after: 15m
allowed_lateness: 1s
state_time_resolution: 1s
"""


def storm_labels(i: int, alertname: str = "DBDown") -> dict[str, str]:
    return {"alertname": alertname, "service": "db", "instance": f"10.0.{i // 250}.{i % 250}:9100"}


def test_storm_of_10k_alerts_opens_exactly_one_incident_with_bounded_events() -> None:
    d = Driver(config(FAST))
    for second in range(10):  # 10,000 distinct alerts over 10 s, then re-sent twice
        d.alerts([note(storm_labels(i), at(second)) for i in range(second * 1000, (second + 1) * 1000)])
        d.tick(at(second + 1))
    for rnd in (40, 80):
        d.alerts([note(storm_labels(i), at(rnd)) for i in range(10_000)])
        d.tick(at(rnd + 1))
    d.tick(at(120))
    d.commit()
    opened = d.of_type("opened")
    assert len(opened) == 1
    assert opened[0].snapshot.alert_count == 10_000
    assert len({c.fingerprint for c in opened[0].alerts}) == 10_000
    assert len(d.events) <= 2  # opened, plus at most one coalesced update
    assert d.engine.stats["deduplicated"] == 20_000


def test_incident_opens_after_group_wait_and_not_before() -> None:
    d = Driver(config(FAST))
    d.alerts([note(storm_labels(1), at(0))])
    d.tick(at(29))
    d.commit()
    assert d.events == []
    d.tick(at(31.5))  # watermark - lateness passes 30 s
    d.commit()
    (opened,) = d.events
    assert opened.type.value == "opened" and opened.seq == 1 and opened.from_state is None
    assert opened.snapshot.state is IncidentState.OPEN
    assert opened.incident_id == f"inc-{d.router.route(storm_labels(1)).gkhash}-{at(0)}"
    assert opened.rule == "default" and opened.snapshot.opened_at == iso(at(0))


def test_dedup_and_updates_coalesce_per_group_interval() -> None:
    d = Driver(config(FAST))
    d.alerts([note(storm_labels(1), at(0))])
    d.tick(at(40))
    for s in range(41, 200, 5):  # re-sends + one new alert every 5 s
        d.alerts([note(storm_labels(1), at(s)), note(storm_labels(s), at(s))])
        d.tick(at(s + 1))
    d.tick(at(400))
    d.commit()
    kinds = [e.type.value for e in d.events]
    assert kinds[0] == "opened"
    updates = d.of_type("updated")
    assert 1 <= len(updates) <= 2  # 160 s of changes after opening: one flush at open+5m
    joined = {c.fingerprint for e in updates for c in e.alerts if c.change is AlertChangeKind.JOINED}
    assert len(joined) == 32
    assert sum(e.deduplicated for e in d.events) >= 30


def test_auto_resolve_then_close_after_quiet_period() -> None:
    d = Driver(config(FAST))
    d.alerts([note(storm_labels(1), at(0)), note(storm_labels(2), at(0))])
    d.tick(at(40))
    d.alerts([note(storm_labels(1), at(50), firing=False)])
    d.tick(at(60))
    assert not d.of_type("resolved") and not d.commit().events[1:]
    d.alerts([note(storm_labels(2), at(70), firing=False)])
    d.tick(at(75))
    d.commit()
    (resolved,) = d.of_type("resolved")
    assert resolved.to_state is IncidentState.RESOLVED and resolved.snapshot.firing_count == 0
    assert resolved.snapshot.resolved_at == iso(at(70))
    d.tick(at(70 + 15 * 60 + 2))
    d.commit()
    (closed,) = d.of_type("closed")
    assert closed.from_state is IncidentState.RESOLVED and closed.to_state is IncidentState.CLOSED
    assert [e.seq for e in d.events] == list(range(1, len(d.events) + 1))
    assert d.engine.groups == {}  # everything collected after close


def test_resolve_timeout_and_ends_at_expire_alerts() -> None:
    d = Driver(config(FAST))
    d.alerts([note(storm_labels(1), at(0)), note(storm_labels(2), at(0), ends=at(100))])
    d.tick(at(40))
    d.tick(at(101 + 1))  # alert 2 expired by endsAt; alert 1 still within resolve_timeout
    d.commit()
    assert not d.of_type("resolved")
    d.tick(at(301 + 1))  # alert 1 not re-sent for 5 min
    d.commit()
    (resolved,) = d.of_type("resolved")
    kinds = {c.change for c in resolved.alerts}
    assert AlertChangeKind.EXPIRED in kinds


def test_reopen_within_window_and_new_incident_after_it() -> None:
    d = Driver(config(FAST))
    d.alerts([note(storm_labels(1), at(0))])
    d.tick(at(40))
    d.alerts([note(storm_labels(1), at(50), firing=False)])
    d.tick(at(60))
    d.alerts([note(storm_labels(1), at(120))])  # within the 10 min reopen window
    d.tick(at(130))
    d.commit()
    assert [e.type.value for e in d.events] == ["opened", "resolved", "reopened"]
    assert d.events[-1].snapshot.reopen_count == 1 and d.events[-1].to_state is IncidentState.OPEN
    d.alerts([note(storm_labels(1), at(140), firing=False)])
    d.tick(at(150))
    d.alerts([note(storm_labels(1), at(150 + 11 * 60))])  # after the window: superseded, new incident
    d.tick(at(150 + 11 * 60 + 40))
    d.commit()
    ids = {e.incident_id for e in d.events}
    assert len(ids) == 2
    assert [e.type.value for e in d.events][-2:] == ["closed", "opened"]


def test_operator_commands_and_refusals_are_recorded() -> None:
    d = Driver(config(FAST))
    d.alerts([note(storm_labels(1), at(0), severity="error")])
    d.tick(at(40))
    d.commit()
    inc = d.events[0].incident_id
    d.command(OperatorAction.ACKNOWLEDGE, inc, command_id="c1")
    d.command(OperatorAction.ACKNOWLEDGE, inc, command_id="c1")  # retried: idempotent
    d.command(OperatorAction.ACKNOWLEDGE, inc, command_id="c2")  # already acknowledged: refused
    d.command(OperatorAction.ASSIGN, inc, assignee="bob", command_id="c3")
    d.command(OperatorAction.ANNOTATE, inc, note="looking at replica lag", command_id="c4")
    d.command(OperatorAction.SET_SEVERITY, inc, severity=Severity.CRITICAL, command_id="c5")
    d.command(OperatorAction.RESOLVE, inc, command_id="c6")
    d.command(OperatorAction.ACKNOWLEDGE, "inc-0000000000000000-1", command_id="c7")  # unknown incident
    out = d.commit()
    kinds = [e.type.value for e in d.events]
    assert kinds == [
        "opened",
        "acknowledged",
        "refused",
        "assigned",
        "annotated",
        "severity_changed",
        "resolved",
    ]
    refused = d.of_type("refused")[0]
    assert "acknowledged" in refused.details["reason"] and refused.actor == "operator:alice"
    assert d.events[-1].snapshot.severity is Severity.CRITICAL and d.events[-1].snapshot.assignee == "bob"
    assert [dl.reason.value for dl in out.dead_letters] == ["unknown_incident"]
    assert d.events[1].snapshot.acknowledged_at is not None


def test_merge_closes_source_and_tells_the_target() -> None:
    d = Driver(config(FAST))
    d.alerts([note(storm_labels(1, "A"), at(0)), note(storm_labels(1, "B"), at(0))])
    d.tick(at(40))
    d.commit()
    a, b = sorted(d.of_type("opened"), key=lambda e: e.snapshot.title)
    d.command(OperatorAction.MERGE, a.incident_id, merge_into=b.incident_id, command_id="m1")
    out = d.commit()
    merged = d.of_type("merged")[0]
    assert merged.to_state is IncidentState.CLOSED and merged.details["merged_into"] == b.incident_id
    ((key, value),) = out.feedback
    assert key == b.incident_id
    d.write(b'{"t":"cmd","cmd":' + value + b"}")
    d.commit()
    absorbed = d.of_type("absorbed")[0]
    assert absorbed.incident_id == b.incident_id and absorbed.details["from"] == a.incident_id


def test_silenced_alerts_open_nothing_and_are_counted() -> None:
    d = Driver(config(FAST))
    silence = Silence(
        silence_id="s1",
        matchers=[Matcher.parse('service="db"')],
        starts_at=iso(at(0)),
        ends_at=iso(at(3600)),
        created_by="alice",
    )
    d.command(OperatorAction.SILENCE_ADD, silence=silence)
    d.alerts([note(storm_labels(i), at(1)) for i in range(5)])
    d.tick(at(60))
    out = d.commit()
    assert d.events == []
    assert d.engine.stats["suppressed_silence"] == 5
    assert out.silences and out.silences[0][0] == "s1"


def test_inhibition_suppresses_targets_sharing_equal_labels() -> None:
    rules = config(
        FAST
        + """
inhibit_rules:
  - name: node-down
    source_match: ['alertname="NodeDown"']
    target_match: ['alertname!="NodeDown"']
    equal: [node]
"""
    )
    d = Driver(rules)
    d.alerts([note({"alertname": "NodeDown", "node": "n1"}, at(0))])
    d.alerts([note({"alertname": "PodCrash", "node": "n1", "pod": f"p{i}"}, at(1)) for i in range(3)])
    d.alerts([note({"alertname": "PodCrash", "node": "n2", "pod": "p9"}, at(1))])
    d.tick(at(60))
    d.commit()
    titles = sorted(e.snapshot.title for e in d.of_type("opened"))
    assert len(titles) == 2  # NodeDown on n1, PodCrash on n2; PodCrash on n1 inhibited
    assert d.engine.stats["suppressed_inhibit"] == 3


def test_flapping_alert_holds_back_updates_until_it_settles() -> None:
    rules = config(FAST + "\nflap: {max_flips: 3, window: 10m, settle: 2m}\n")
    d = Driver(rules)
    d.alerts([note(storm_labels(1), at(0)), note(storm_labels(2), at(0))])
    d.tick(at(40))
    for k in range(8):  # alert 1 flips every 10 s
        d.alerts([note(storm_labels(1), at(50 + 10 * k), firing=(k % 2 == 1))])
        d.tick(at(51 + 10 * k))
    d.commit()
    assert not d.of_type("resolved")  # a flapping alert keeps the incident open
    assert d.engine.stats["flapping_detected"] == 1
    d.tick(at(50 + 80 + 121 + 300))
    d.commit()
    changes = [c.change for e in d.events for c in e.alerts]
    assert AlertChangeKind.FLAPPING in changes and AlertChangeKind.SETTLED in changes


def test_restart_from_state_gives_identical_events() -> None:
    """Crash after any commit, rebuild from the changelog, replay: same events as an uninterrupted run."""
    script: list[tuple[str, object]] = []
    for s in range(0, 400, 7):
        names = ("A", "B", "C") if s < 250 else ("A",)
        script.append(
            (
                "alerts",
                [
                    note(storm_labels(i, names[i % len(names)]), at(s + (i % 3)))
                    for i in range(s % 11, s % 11 + 6)
                ],
            )
        )
        if s % 21 == 0:
            script.append(("alerts", [note(storm_labels(s % 11, "A"), at(s + 2), firing=False)]))
        script.append(("tick", at(s + 3)))
    script.append(("tick", at(3000)))

    def run(crash_every: int | None) -> list[str]:
        d = Driver(config(FAST))
        for n, (kind, arg) in enumerate(script):
            if kind == "alerts":
                d.alerts(arg)  # type: ignore[arg-type]
            else:
                d.tick(arg)  # type: ignore[arg-type]
            if n % 3 == 0:
                d.commit()
            if crash_every and n % crash_every == crash_every - 1:
                d.events = d.events  # committed events stay; uncommitted output is lost
                d.engine.take_output()  # discard (the aborted transaction)
                d.restart()
        d.commit()
        return [e.to_bytes().decode() for e in d.events]

    baseline = run(None)
    assert len(baseline) > 10, baseline
    for crash_every in (5, 7, 13):
        assert run(crash_every) == baseline


def test_pagerduty_resolve_by_dedup_key_reaches_the_trigger_group() -> None:
    d = Driver(config(FAST))
    trigger = {"alertname": "DiskFull", "source": "db-1", "dedup_key": "disk-db-1"}
    d.alerts([note(trigger, at(0), key="disk-db-1", severity="error")])
    d.tick(at(40))
    d.by_key(note({"dedup_key": "disk-db-1"}, at(50), firing=False, key="disk-db-1"))
    d.by_key(note({"dedup_key": "unknown"}, at(51), firing=False, key="unknown"))
    d.tick(at(60))
    d.commit()
    assert [e.type.value for e in d.events] == ["opened", "resolved"]
    assert d.engine.stats["by_key_elsewhere"] == 1


def test_max_lifetime_closes_and_a_still_firing_group_opens_a_new_incident() -> None:
    d = Driver(config(FAST.replace("close_after: 15m", "close_after: 15m\n  max_lifetime: 10m")))
    d.alerts([note(storm_labels(1), at(0), ends=at(3600))])  # keeps firing for an hour
    d.tick(at(40))
    d.tick(at(10 * 60 + 1))
    d.tick(at(10 * 60 + 40))
    d.commit()
    kinds = [(e.incident_id, e.type.value) for e in d.events]
    first, second = kinds[0][0], kinds[-1][0]
    assert kinds == [(first, "opened"), (first, "closed"), (second, "opened")] and first != second
    assert "lifetime" in d.events[1].cause


def test_late_alerts_are_applied_and_counted_or_dead_lettered() -> None:
    for policy, expect_dlq in (("apply", 0), ("dead_letter", 1)):
        d = Driver(config(FAST + f"\nlate_policy: {policy}\n"))
        d.alerts([note(storm_labels(1), at(0))])
        d.tick(at(100))
        d.alerts([note(storm_labels(2), at(10))])  # 90 s behind the watermark, lateness is 1 s
        d.tick(at(400))
        out = d.commit()
        assert d.engine.stats["late_alerts"] == 1
        assert len(out.dead_letters) == expect_dlq
        joined = {c.fingerprint for e in d.events for c in e.alerts}
        assert (len(joined) == 2) is (policy == "apply")


def test_ticks_alone_write_and_commit_nothing_until_the_quiet_bound() -> None:
    """Idle cost (issue #16): a batch that only moves the clock writes no partition record and
    commits no offset until QUIET_PERSIST_MS of event time went by that way; a crash in between
    re-reads those ticks to the same state, so the events after it are the same."""

    def run(crash: bool) -> tuple[list[str], list[tuple[bool, int | None]]]:
        d = Driver(config(FAST))
        d.alerts([note(storm_labels(1, "A"), at(0))])
        d.tick(at(1))
        d.commit()
        d.tick(at(60))  # group_wait passes: the incident opens, a real commit
        first = d.commit()
        assert first.events and PARTITION_KEY in first.state and first.commit_offset is not None
        seen = []
        for s in range(61, 61 + 3 * QUIET_PERSIST_MS // 1000):
            d.tick(at(s))
            out = d.commit()
            seen.append((PARTITION_KEY in out.state, out.commit_offset))
            if crash and s == 65:
                d.restart()
        d.alerts([note(storm_labels(2, "A"), at(100))])
        d.tick(at(200))
        d.commit()
        return [e.to_bytes().decode() for e in d.events], seen

    events, seen = run(crash=False)
    # the first seconds after activity commit every batch; then one partition record (and one
    # commit) per QUIET_PERSIST_MS of idle event time, nothing in between
    settle = QUIET_AFTER_MS // 1000 - 1
    assert all(written for written, _ in seen[:settle])
    later = [written for written, _ in seen[settle:]]
    assert 1 <= sum(later) <= len(later) // (QUIET_PERSIST_MS // 1000) + 1
    assert all(offset is None for written, offset in seen if not written)
    assert run(crash=True)[0] == events
