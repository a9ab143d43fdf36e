"""A receiver down for a while (issue #13's acceptance: 5 minutes), then back: every message is
retried with backoff and delivered afterwards, in event order per incident; none lost, none
doubled. ``python -m stormwatch.bench.notify_outage --outage 300`` (or `stormwatch bench
notify-outage --outage 300`) runs the full outage and prints the counts; the integration test
runs the same scenario with a short outage and a short backoff.

The scenario, against one ``stormwatch notify`` worker (a subprocess, as deployed) and the
loopback webhook receiver of ``bench/notify.py``:

1. ``incidents`` incidents open while the receiver is up: each is delivered (the baseline).
2. The receiver goes down (its port closed: connections are refused). During the outage, in
   three waves, each incident resolves, reopens and resolves again, and as many new incidents open
   and resolve: every one of those notifications fails and is retried with backoff.
3. The receiver comes back on the same port. The run waits for every expected notification, then
   a few seconds more for any extra copy, and counts: expected, received, lost, received twice,
   incidents whose messages arrived out of event order, attempts that failed, notifications given
   up, and how long the backlog took to drain after the receiver was back.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import orjson

from stormwatch.agents.core.notify_policy import notification_id
from stormwatch.bench.notify import RECEIVER, Hook, IncidentScript, NotifyRun, publish, wait_until
from stormwatch.bench.procstat import loadavg
from stormwatch.schemas.incident import IncidentEvent
from stormwatch.schemas.incident import IncidentEventType as E

__all__ = ["main", "render", "retry_for", "run_outage"]


def retry_for(outage_s: float) -> str:
    """A backoff that keeps retrying through the outage: the longest delay a tenth of it (1 s to
    30 s), the budget three times it plus a minute (nothing is given up)."""
    longest = min(max(outage_s / 10, 1.0), 30.0)
    initial = min(0.2 if outage_s < 60 else 1.0, longest)
    budget = outage_s * 3 + 60
    return f"{{initial: {int(initial * 1000)}ms, max: {int(longest * 1000)}ms, budget: {int(budget)}s}}"


def run_outage(
    bootstrap: str,
    *,
    outage_s: float = 300.0,
    incidents: int = 20,
    partitions: int = 3,
    workdir: Path | None = None,
    log: Any = None,
) -> dict[str, Any]:
    say = log or (lambda line: None)
    retry = retry_for(outage_s)
    with tempfile.TemporaryDirectory(prefix="stormwatch-notify-outage-") as tmp:
        hook = Hook()
        run = NotifyRun(bootstrap, workdir or Path(tmp), hook.url, partitions=partitions, retry=retry)
        try:
            return _scenario(run, hook, outage_s, incidents, retry, say)
        finally:
            run.close()
            hook.close()


def _scenario(
    run: NotifyRun, hook: Hook, outage_s: float, incidents: int, retry: str, say: Any
) -> dict[str, Any]:
    load_before = loadavg()
    order: dict[str, tuple[str, int]] = {}  # notification id -> (incident, seq)

    def events(batch: list[IncidentEvent]) -> None:
        for e in batch:
            order[notification_id(e.incident_id, e.seq, RECEIVER)] = (e.incident_id, e.seq)
        publish(run.settings, batch)

    def now() -> int:
        return int(time.time() * 1000)

    old = [IncidentScript(f"inc-old-{n:03d}", service=f"old-{n}") for n in range(incidents)]
    new = [IncidentScript(f"inc-new-{n:03d}", service=f"new-{n}") for n in range(incidents)]
    run.start()
    events([s.event(E.OPENED, now()) for s in old])
    wait_until("the baseline deliveries", lambda: len(hook.ids()) >= incidents, 90, run)
    say(f"{incidents} incidents opened and delivered; receiver down for {outage_s:g} s (retry {retry})")

    hook.down()
    down_at = time.monotonic()
    # each wave is made when it is written, so an incident's events keep their order in time too
    waves: list[list[tuple[list[IncidentScript], E]]] = [
        [(old, E.RESOLVED), (new, E.OPENED)],
        [(old, E.REOPENED)],
        [(old, E.RESOLVED), (new, E.RESOLVED)],
    ]
    for n, plan in enumerate(waves):
        starts = outage_s * (0.1 + 0.3 * n)
        wait_until(
            "the next wave", lambda starts=starts: time.monotonic() - down_at >= starts, outage_s, run, 0.5
        )
        wave = [script.event(kind, now()) for scripts, kind in plan for script in scripts]
        events(wave)
        say(f"wave {n + 1}: {len(wave)} events while the receiver is down")
    wait_until(
        "the end of the outage", lambda: time.monotonic() - down_at >= outage_s, outage_s + 5, run, 0.5
    )
    refused_while_down = len(hook.ids()) - incidents
    hook.up()
    back_at = time.monotonic()
    expected = set(order)
    say(f"receiver back; waiting for {len(expected)} notifications")
    wait_until("every notification", lambda: expected <= set(hook.ids()), 120 + outage_s / 5, run, 0.2)
    drained_s = time.monotonic() - back_at
    time.sleep(3)  # room for an extra copy, if one were (wrongly) coming
    arrivals = hook.taken()
    received = Counter(a.notification_id for a in arrivals)
    seqs: dict[str, list[int]] = {}
    for a in arrivals:
        incident, seq = order.get(a.notification_id, (a.incident_id, -1))
        seqs.setdefault(incident, []).append(seq)
    out_of_order = sorted(i for i, s in seqs.items() if s != sorted(s))
    outcomes = Counter(r["outcome"] for r in run.log())
    attempts = [r["attempt"] for r in run.log() if r["outcome"] == "sent"]
    return {
        "workload": "notify-outage",
        "outage_s": outage_s,
        "retry": retry,
        "incidents": 2 * incidents,
        "notifications_expected": len(expected),
        "received": sum(received.values()),
        "distinct_received": len(received),
        "lost": len(expected - set(received)),
        "received_twice": sum(1 for n in received.values() if n > 1),
        "unexpected": len(set(received) - expected),
        "delivered_while_down": refused_while_down,
        "incidents_out_of_order": len(out_of_order),
        "failed_attempts": outcomes.get("failed", 0),
        "sent_records": outcomes.get("sent", 0),
        "given_up": outcomes.get("given_up", 0),
        "max_attempts_of_one": max(attempts, default=0),
        "drained_after_back_s": round(drained_s, 1),
        "load_before": load_before,
        "load_after": loadavg(),
    }


def render(result: dict[str, Any]) -> str:
    r = result
    return "\n".join(
        [
            f"receiver down {r['outage_s']:g} s (retry {r['retry']}); {r['incidents']} incidents",
            f"notifications: expected {r['notifications_expected']}, received {r['received']} "
            f"({r['distinct_received']} distinct), lost {r['lost']}, received twice {r['received_twice']}, "
            f"unexpected {r['unexpected']}, delivered while down {r['delivered_while_down']}",
            f"incidents out of event order: {r['incidents_out_of_order']}",
            f"notification log: {r['sent_records']} sent, {r['failed_attempts']} failed attempts, "
            f"{r['given_up']} given up; most attempts for one notification: {r['max_attempts_of_one']}",
            f"all delivered {r['drained_after_back_s']:.1f} s after the receiver was back",
            f"load before {r['load_before'][0]:.1f}, after {r['load_after'][0]:.1f}",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m stormwatch.bench.notify_outage", description=__doc__.split("\n\n")[0]
    )
    p.add_argument("--bootstrap-servers", default=os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092"))
    p.add_argument("--outage", type=float, default=300.0, help="seconds the receiver is down (300)")
    p.add_argument(
        "--incidents", type=int, default=20, help="incidents open before the outage (as many open during it)"
    )
    p.add_argument("--partitions", type=int, default=3)
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    result = run_outage(
        args.bootstrap_servers,
        outage_s=args.outage,
        incidents=args.incidents,
        partitions=args.partitions,
        log=lambda line: print(f"... {line}", file=sys.stderr, flush=True),
    )
    print(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode() if args.json else render(result))
    ok = result["lost"] == 0 and result["received_twice"] == 0 and result["incidents_out_of_order"] == 0
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
