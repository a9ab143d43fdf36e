"""Execution guards: rate limits, cooldowns, concurrency and blast radius. Pure and serializable.

Every check is a function of the guard state and an explicit time, so the agent's decisions can
be replayed in tests and the state restored after a restart gives the same answers. The state
holds only what the checks need: when each (action, target) ran within the longest guard window,
which commands are running, and which targets were touched in the last minute.

Guards count *dispatches* (commands sent to executors), not successes: a restart that failed
still restarted something, and a guard that forgot failures would let a failing automation loop.
"""

from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from stormwatch.agents.core.workflow import Guards
from stormwatch.schemas.common import utc_from_ms
from stormwatch.schemas.durations import format_duration

__all__ = ["RECORD_PREFIX", "GuardState", "InFlight", "Verdict", "guard_key"]

MINUTE_MS = 60_000


def guard_key(action: str, target: str | None) -> str:
    """The (action, target) pair rate limits and cooldowns count per; no target: per action."""
    return f"{action}\x1f{target or ''}"


class InFlight(BaseModel):
    action: str
    target: str | None
    incident_id: str
    since_ms: int


@dataclass(frozen=True, slots=True)
class Verdict:
    allowed: bool
    guard: str | None = None  # which guard refused: rate_limit, cooldown, max_concurrent, blast_radius
    reason: str | None = None


ALLOWED = Verdict(True)


def _at(ms: int) -> str:
    return utc_from_ms(ms).strftime("%Y-%m-%dT%H:%M:%SZ")


def _what(action: str, target: str | None) -> str:
    return f"{action} on {target!r}" if target else action


@dataclass
class GuardState:
    """Execution history and running commands; ``dirty`` names the records changed since last taken."""

    history: dict[str, list[int]] = field(default_factory=dict)  # guard_key -> dispatch times, ascending
    in_flight: dict[str, InFlight] = field(default_factory=dict)  # command_id -> running command
    recent_targets: list[tuple[int, str]] = field(default_factory=list)  # (ms, target), ascending
    dirty: set[str] = field(default_factory=set)

    # -- checks

    def check(
        self,
        guards: Guards,
        *,
        action: str,
        target: str | None,
        incident_targets: list[str],
        now_ms: int,
    ) -> Verdict:
        """Would one more execution of ``action`` on ``target`` now stay within ``guards``?"""
        what = _what(action, target)
        if guards.max_concurrent is not None:
            running = sum(1 for f in self.in_flight.values() if f.action == action)
            if running >= guards.max_concurrent:
                return Verdict(
                    False,
                    "max_concurrent",
                    f"max concurrent: {running} {action} command(s) already running "
                    f"(limit {guards.max_concurrent})",
                )
        times = self.history.get(guard_key(action, target), [])
        if guards.cooldown_ms and times:
            last = times[-1]
            if now_ms - last < guards.cooldown_ms:
                return Verdict(
                    False,
                    "cooldown",
                    f"cooldown: {what} last ran at {_at(last)}, {format_duration(now_ms - last)} ago; "
                    f"cooldown {format_duration(guards.cooldown_ms)}, possible again at "
                    f"{_at(last + guards.cooldown_ms)}",
                )
        limit = guards.rate_limit
        if limit is not None:
            window = times[bisect_left(times, now_ms - limit.per_ms + 1) :]
            if len(window) >= limit.max:
                next_ok = window[len(window) - limit.max] + limit.per_ms
                per = format_duration(limit.per_ms)
                return Verdict(
                    False,
                    "rate_limit",
                    f"rate limit: {what} already ran {len(window)} time(s) in the last {per} "
                    f"(limit {limit.max} per {per}); "
                    f"possible again at {_at(next_ok)}",
                )
        radius = guards.blast_radius
        if radius is not None and target:
            if (
                radius.per_incident is not None
                and target not in incident_targets
                and len(incident_targets) >= radius.per_incident
            ):
                shown = ", ".join(sorted(incident_targets)[:10])
                return Verdict(
                    False,
                    "blast_radius",
                    f"blast radius: this incident already touched {len(incident_targets)} distinct "
                    f"target(s) ({shown}); limit {radius.per_incident} per incident, {target!r} would "
                    "be one more",
                )
            if radius.per_minute is not None:
                recent = {t for ms, t in self.recent_targets if now_ms - ms < MINUTE_MS}
                if target not in recent and len(recent) >= radius.per_minute:
                    return Verdict(
                        False,
                        "blast_radius",
                        f"blast radius: {len(recent)} distinct target(s) touched in the last minute across "
                        f"incidents; limit {radius.per_minute} per minute, {target!r} would be one more",
                    )
        return ALLOWED

    # -- updates

    def record_dispatch(
        self, command_id: str, *, action: str, target: str | None, incident_id: str, now_ms: int
    ) -> None:
        key = guard_key(action, target)
        times = self.history.setdefault(key, [])
        times.append(now_ms)
        times.sort()
        self.dirty.add(_history_record(key))
        self.in_flight[command_id] = InFlight(
            action=action, target=target, incident_id=incident_id, since_ms=now_ms
        )
        self.dirty.add(_IN_FLIGHT)
        if target:
            self.recent_targets.append((now_ms, target))
            self.recent_targets.sort()
            self.dirty.add(_RECENT)

    def record_finished(self, command_id: str) -> bool:
        """The command ended (or will never report); frees its concurrency slot. True if it was running."""
        if self.in_flight.pop(command_id, None) is None:
            return False
        self.dirty.add(_IN_FLIGHT)
        return True

    def prune(self, now_ms: int, horizon_ms: int) -> None:
        """Forget history no guard looks at any more (older than ``horizon_ms``)."""
        cutoff = now_ms - horizon_ms
        for key in list(self.history):
            times = self.history[key]
            keep = times[bisect_left(times, cutoff) :]
            if len(keep) != len(times):
                self.dirty.add(_history_record(key))
                if keep:
                    self.history[key] = keep
                else:
                    del self.history[key]
        recent = [(ms, t) for ms, t in self.recent_targets if now_ms - ms < MINUTE_MS]
        if len(recent) != len(self.recent_targets):
            self.recent_targets = recent
            self.dirty.add(_RECENT)

    # -- persistence (records of the agent's compacted state topic)

    def take_changes(self) -> dict[str, Any | None]:
        """Record key -> JSON-able value (None: delete) for everything changed since the last call."""
        out: dict[str, Any | None] = {}
        for record in sorted(self.dirty):
            if record == _IN_FLIGHT:
                out[record] = {k: v.model_dump() for k, v in sorted(self.in_flight.items())}
            elif record == _RECENT:
                out[record] = [list(p) for p in self.recent_targets]
            else:
                times = self.history.get(record.removeprefix(_HISTORY))
                out[record] = times if times else None
        self.dirty.clear()
        return out

    @classmethod
    def restore(cls, records: dict[str, Any]) -> GuardState:
        """Rebuild from the records ``take_changes`` wrote (unknown keys are ignored)."""
        state = cls()
        for key, value in records.items():
            if key == _IN_FLIGHT:
                state.in_flight = {k: InFlight.model_validate(v) for k, v in value.items()}
            elif key == _RECENT:
                state.recent_targets = [(int(ms), str(t)) for ms, t in value]
            elif key.startswith(_HISTORY):
                state.history[key.removeprefix(_HISTORY)] = [int(ms) for ms in value]
        return state


_HISTORY = "guard/history/"
_IN_FLIGHT = "guard/in_flight"
_RECENT = "guard/recent_targets"
RECORD_PREFIX = "guard/"


def _history_record(key: str) -> str:
    return _HISTORY + key
