"""What inhibition muted, told to the muting incident (issue #12: "muted alerts are recorded").

An inhibited alert is muted in the partition of its own group, while the alert that mutes it (a
NodeDown) belongs to an incident that may live in another partition. ``MuteTally`` counts, per
source group and ``group_interval`` window of event time, the alerts that became muted and the
notifications muted, with the first few label sets as a sample; when event time passes a window's
end, the window is sent to the source group's partition as a ``muted`` command (a timed command,
streams.core.timed, applied one interval after the window's end), which records it on the source's
incident as a ``muted`` event and adds it to the incident's muted count. So a storm of 300 muted
pods is a few events on the NodeDown incident, not 300 nor 0.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["MuteTally", "MuteWindow"]

SAMPLE_SIZE = 5
"""Label sets kept per window: enough to see what was muted, bounded whatever the storm."""


@dataclass(slots=True)
class MuteWindow:
    rule: str
    alerts: int = 0  # alerts that became muted in the window
    notifications: int = 0  # notifications of muted alerts
    sample: list[dict[str, str]] = field(default_factory=list)

    def to_obj(self) -> list[Any]:
        return [self.rule, self.alerts, self.notifications, self.sample]


class MuteTally:
    """Muted counts per (source gkhash, window start); see the module docstring."""

    def __init__(self, interval_ms: int) -> None:
        self.interval_ms = interval_ms
        self.windows: dict[tuple[str, int], MuteWindow] = {}

    def __len__(self) -> int:
        return len(self.windows)

    def count(self, source: str, rule: str, labels: dict[str, str], t: int, newly: bool) -> None:
        """One notification muted at ``t`` by the source group ``source``; ``newly``: its alert
        was not muted by it before."""
        if not source:
            return  # an inhibitor from before sources were named: nobody to tell
        start = t - t % self.interval_ms
        window = self.windows.get((source, start))
        if window is None:
            window = self.windows[(source, start)] = MuteWindow(rule)
        window.notifications += 1
        if newly:
            window.alerts += 1
            if len(window.sample) < SAMPLE_SIZE:
                window.sample.append(dict(labels))

    def earliest_end(self) -> int | None:
        """When the earliest open window ends (and is sent), or None."""
        if not self.windows:
            return None
        return min(start for _, start in self.windows) + self.interval_ms

    def due(self, clock: int) -> list[tuple[str, int, int, MuteWindow]]:
        """The windows that ended at or before ``clock`` (source, start, end, counts), taken out,
        in (start, source) order."""
        ready = sorted(key for key in self.windows if key[1] + self.interval_ms <= clock)
        ready.sort(key=lambda key: (key[1], key[0]))
        return [
            (source, start, start + self.interval_ms, self.windows.pop((source, start)))
            for source, start in ready
        ]

    def to_obj(self) -> list[Any]:
        return [[source, start, *w.to_obj()] for (source, start), w in sorted(self.windows.items())]

    def restore(self, rows: list[Any]) -> None:
        self.windows = {
            (str(source), int(start)): MuteWindow(str(rule), int(alerts), int(notes), list(sample))
            for source, start, rule, alerts, notes, sample in rows
        }

    @staticmethod
    def rows_in(meta: Mapping[str, Any]) -> list[Any]:
        return list(meta.get("muted", []))
