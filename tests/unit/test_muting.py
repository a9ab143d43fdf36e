"""Mutes: silences, inhibition and flap detection each say whether an alert is muted, and why."""

from __future__ import annotations

from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stormwatch.commands.silences import silence_state
from stormwatch.schemas.incident import AlertChangeKind
from stormwatch.schemas.matchers import Matcher
from stormwatch.schemas.silence import Silence
from stormwatch.streams.core.flapping import FLAPPING, FlapDetector
from stormwatch.streams.core.groups import AlertState
from stormwatch.streams.core.inhibition import Inhibitions
from stormwatch.streams.core.muting import Mute, Suppression, SuppressionKind
from stormwatch.streams.core.rules import FlapPolicy, parse_rules
from stormwatch.streams.core.silencing import Silences
from tests.kit.engine import at, iso, note

NODE_DOWN = """
inhibit_rules:
  - name: node-down
    source_match: ['alertname="NodeDown"']
    target_match: ['alertname!="NodeDown"']
    equal: [node]
"""


def silence(silence_id: str, matcher: str, start_s: float, end_s: float) -> Silence:
    return Silence(
        silence_id=silence_id,
        matchers=[Matcher.parse(matcher)],
        starts_at=iso(at(start_s)),
        ends_at=iso(at(end_s)),
        created_by="alice",
    )


@pytest.mark.parametrize(
    ("text", "kind", "ident"),
    [
        ("silence:s1", SuppressionKind.SILENCE, "s1"),
        ("inhibit:node-down", SuppressionKind.INHIBIT, "node-down"),
        ("silence:ops:2025:01", SuppressionKind.SILENCE, "ops:2025:01"),  # ids may hold colons
    ],
)
def test_a_reason_decodes_from_the_state_string_and_encodes_back_to_it(
    text: str, kind: SuppressionKind, ident: str
) -> None:
    reason = Suppression.decode(text)
    assert (reason.kind, reason.id) == (kind, ident)
    assert reason.encode() == text
    assert reason is Suppression.of(kind, ident)  # one shared object per reason


@given(st.sampled_from([SuppressionKind.SILENCE, SuppressionKind.INHIBIT]), st.text(min_size=0, max_size=20))
def test_any_reason_survives_its_state_string(kind: SuppressionKind, ident: str) -> None:
    reason = Suppression(kind, ident)
    assert Suppression.decode(reason.encode()) == reason


@pytest.mark.parametrize("text", ["", "silence", "mute:x", "Silence:s1"])
def test_a_string_that_is_no_reason_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="not a suppression reason"):
        Suppression.decode(text)


def test_each_kind_of_reason_names_its_change_and_its_counter() -> None:
    assert Suppression(SuppressionKind.SILENCE, "s").change_kind is AlertChangeKind.SILENCED
    assert Suppression(SuppressionKind.INHIBIT, "r").change_kind is AlertChangeKind.INHIBITED
    assert FLAPPING.change_kind is AlertChangeKind.FLAPPING
    stats = {Suppression(kind, "x").stat for kind in SuppressionKind}
    assert stats == {"suppressed_silence", "suppressed_inhibit", "suppressed_flapping"}


def test_a_silence_mutes_matching_alerts_only_while_it_is_active() -> None:
    silences = Silences()
    silences.add(silence("s1", 'service="db"', 10, 20))
    db, web = {"service": "db"}, {"service": "web"}
    assert silences.muted(db, at(9.999)) is None
    assert silences.muted(db, at(10)) == Suppression(SuppressionKind.SILENCE, "s1")
    assert silences.muted(web, at(15)) is None
    assert silences.muted(db, at(20)) is None  # the end is exclusive


def test_the_first_added_active_silence_is_the_reason() -> None:
    silences = Silences()
    silences.add(silence("late", 'service="db"', 5, 50))
    silences.add(silence("early", 'service="db"', 0, 50))
    assert silences.muted({"service": "db"}, at(1)) == Suppression(SuppressionKind.SILENCE, "early")
    assert silences.muted({"service": "db"}, at(6)) == Suppression(SuppressionKind.SILENCE, "late")


def test_an_expired_silence_stops_muting_and_expiring_it_again_changes_nothing() -> None:
    silences = Silences()
    s1 = silence("s1", 'service="db"', 0, 100)
    silences.add(s1)
    assert Silences.expire(s1, at(30))
    assert s1.expired_at == iso(at(30))
    assert not Silences.expire(s1, at(40))
    assert s1.expired_at == iso(at(30))
    assert silences.muted({"service": "db"}, at(29)) is not None
    assert silences.muted({"service": "db"}, at(30)) is None


def test_restored_silences_mute_as_the_ones_they_were_written_from() -> None:
    silences = Silences()
    silences.replace_all({"s1": silence("s1", 'service="db"', 0, 100)})
    assert len(silences) == 1
    assert silences.muted({"service": "db"}, at(1)) == Suppression(SuppressionKind.SILENCE, "s1")


def test_an_inhibitor_mutes_targets_with_equal_labels_while_it_fires_and_has_not_expired() -> None:
    rules = parse_rules(NODE_DOWN)
    inhibitions = Inhibitions(rules.inhibit_rules, resolve_timeout_ms=60_000, resolution_ms=1000)
    target = {"alertname": "PodCrash", "node": "n1"}
    assert inhibitions.muted(target, at(1)) is None
    inhibitions.apply("node-down", note({"alertname": "NodeDown", "node": "n1"}, at(0)), at(0))
    reason = inhibitions.muted(target, at(1))
    assert reason == Suppression(SuppressionKind.INHIBIT, "node-down")
    assert inhibitions.muted({"alertname": "PodCrash", "node": "n2"}, at(1)) is None
    assert inhibitions.muted(target, at(60)) is None  # no endsAt: it lasts resolve_timeout
    inhibitions.apply("node-down", note({"alertname": "NodeDown", "node": "n1"}, at(2), firing=False), at(2))
    assert inhibitions.muted(target, at(3)) is None


def test_silences_and_inhibition_are_mutes() -> None:
    rules = parse_rules(NODE_DOWN)
    mutes: list[Mute] = [Silences(), Inhibitions(rules.inhibit_rules, 60_000, 1000)]
    assert all(m.muted({"alertname": "X"}, at(0)) is None for m in mutes)


def test_an_alert_flaps_once_it_flips_more_than_allowed_within_the_window() -> None:
    detector = FlapDetector(FlapPolicy(max_flips=3, window_ms=60_000, settle_ms=30_000))
    alert = AlertState("fp", {"alertname": "X"}, {}, "warning", True, at(0), at(0), None)
    started = [detector.record_flip(alert, at(s)) for s in (0, 10, 20, 30)]
    assert started == [None, None, None, FLAPPING]
    assert alert.flapping and detector.muted(alert) is FLAPPING
    assert detector.record_flip(alert, at(40)) is None  # already flapping: reported once


def test_flips_outside_the_window_are_forgotten() -> None:
    detector = FlapDetector(FlapPolicy(max_flips=2, window_ms=10_000, settle_ms=30_000))
    alert = AlertState("fp", {"alertname": "X"}, {}, "warning", True, at(0), at(0), None)
    for s in (0, 11, 22, 33):
        assert detector.record_flip(alert, at(s)) is None
    assert list(alert.flips) == [at(33)] and detector.muted(alert) is None


def test_a_silence_is_active_from_its_start_until_its_end_or_early_expiry() -> None:
    s1 = silence("s1", 'service="db"', 10, 20)
    start, end, ms = s1.starts_at, s1.ends_at, timedelta(milliseconds=1)
    assert not s1.is_active(start - ms)
    assert s1.is_active(start) and s1.is_active(end - ms)
    assert not s1.is_active(end)
    s1.expired_at = start + timedelta(seconds=5)
    assert s1.is_active(start + timedelta(seconds=4)) and not s1.is_active(start + timedelta(seconds=5))


def test_a_silence_is_active_to_the_millisecond_as_the_correlator_keeps_time() -> None:
    s1 = silence("s1", 'service="db"', 10, 20)
    assert s1.is_active(s1.starts_at - timedelta(microseconds=400))  # the same millisecond
    assert not s1.is_active(s1.ends_at - timedelta(microseconds=400))


@given(st.integers(0, 40_000), st.integers(0, 40_000), st.integers(0, 40_000), st.integers(0, 40_000))
def test_active_in_milliseconds_is_started_not_ended_and_not_expired(
    start: int, length: int, expired_after: int, probe: int
) -> None:
    s1 = silence("s1", 'service="db"', 0, 1)
    s1.starts_at, s1.ends_at = iso(at(0) + start), iso(at(0) + start + length)
    expired = start + expired_after if expired_after % 2 else None
    s1.expired_at = None if expired is None else iso(at(0) + expired)
    expected = start <= probe < start + length and (expired is None or probe < expired)
    assert s1.is_active_ms(at(0) + probe) is expected
    assert s1.is_active(iso(at(0) + probe)) is expected


@given(st.integers(-100, 100), st.one_of(st.none(), st.integers(-100, 100)))
def test_silence_list_shows_active_exactly_when_the_correlator_mutes(
    probe_s: int, expired_s: int | None
) -> None:
    s1 = silence("s1", 'service="db"', 0, 50)
    s1.expired_at = None if expired_s is None else iso(at(expired_s))
    state = silence_state(s1, iso(at(probe_s)))
    assert (state == "active") is s1.is_active_ms(at(probe_s))
    if state != "active":  # pending: not started, and not expired before it would start
        will_start = probe_s < 0 and (expired_s is None or expired_s > 0)
        assert state == ("pending" if will_start else "expired")
