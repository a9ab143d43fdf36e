"""The gateway's Alertmanager API v2 without a broker: routes, auth, status codes, error bodies.

The read model is filled by hand (no follower thread), and the silence commands are "applied"
straight into it, as the correlator would write them to the silences topic; the real path through
Kafka and the correlator is tests/integration/test_alertmanager_api_kafka.py.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from typing import Any

import orjson
import pytest

from stormwatch import amapi
from stormwatch.config import Settings
from stormwatch.gateway import Gateway
from stormwatch.kafkasink import KafkaSink
from stormwatch.readmodel.follower import ReadModelFollower
from stormwatch.schemas.common import utc_from_ms
from stormwatch.schemas.matchers import Matcher
from stormwatch.schemas.silence import Silence
from stormwatch.streams.core.groups import AlertState, GroupState
from tests.unit.test_gateway import TOKEN, Harness, make_settings

NOW_MS = int(time.time() * 1000)


class HandFollower(ReadModelFollower):
    """A follower that never starts a thread: the test applies records itself."""

    def __init__(self, settings: Settings, ready: bool = True) -> None:
        super().__init__(settings)
        if ready:
            self._ready.set()


def fill(follower: ReadModelFollower) -> None:
    model = follower.model
    group = GroupState(gkhash="g1", group_key="{job=api}", rule="default", group_labels={"job": "api"})
    model.apply_state(0, "g/g1", group.encode_meta())
    for fp, name in (("fa", "ApiDown"), ("fb", "DiskFull")):
        labels = {"alertname": name, "job": "api", "payload": "<script>alert(1)</script>"}
        alert = AlertState(fp, labels, {}, "warning", True, NOW_MS - 60_000, NOW_MS - 1000, None)
        model.apply_state(0, f"a/g1/{fp}", alert.encode())


@pytest.fixture(scope="module")
def sink() -> Iterator[KafkaSink]:
    s = KafkaSink(make_settings())
    yield s
    s.close(0)


@pytest.fixture
def api(
    sink: KafkaSink, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[..., tuple[Harness, HandFollower, list[str]]]]:
    made: list[Harness] = []

    def make(*, ready: bool = True, **config: Any) -> tuple[Harness, HandFollower, list[str]]:
        settings = make_settings(**config)
        follower = HandFollower(settings, ready)
        fill(follower)
        published: list[str] = []

        def add(settings: Settings, silence: Silence, *, now: datetime) -> None:
            published.append(f"add {silence.silence_id} by {silence.created_by}")
            follower.model.apply_silence(silence.silence_id, silence.to_bytes(), NOW_MS)

        def expire(settings: Settings, silence_id: str, *, by: str, now: datetime) -> None:
            published.append(f"expire {silence_id} by {by}")
            view = follower.model.silence(silence_id, NOW_MS)
            assert view is not None
            done = view.silence.model_copy(update={"expired_at": now})
            follower.model.apply_silence(silence_id, done.to_bytes(), NOW_MS)

        monkeypatch.setattr(amapi, "publish_silence_add", add)
        monkeypatch.setattr(amapi, "publish_silence_expire", expire)
        harness = Harness(Gateway(settings, sink, readmodel=follower))
        made.append(harness)
        return harness, follower, published

    yield make
    for harness in made:
        harness.close()


def iso(delta: timedelta) -> str:
    return (utc_from_ms(NOW_MS) + delta).isoformat().replace("+00:00", "Z")


def postable(**overrides: Any) -> dict[str, Any]:
    return {
        "matchers": [{"name": "alertname", "value": "ApiDown", "isRegex": False, "isEqual": True}],
        "startsAt": iso(timedelta(0)),
        "endsAt": iso(timedelta(hours=1)),
        "createdBy": "alice",
        "comment": "deploy",
        **overrides,
    }


def test_get_alerts_with_filter(api: Callable[..., tuple[Harness, HandFollower, list[str]]]) -> None:
    harness, _, _ = api()
    reply = harness.request("GET", "/api/v2/alerts")
    assert reply.status == 200 and reply.headers["Content-Type"].startswith("application/json")
    assert [a["fingerprint"] for a in reply.json()] == ["fa", "fb"]
    reply = harness.request("GET", "/api/v2/alerts", params=[("filter", 'alertname="DiskFull"')])
    alerts = reply.json()
    assert [a["labels"]["alertname"] for a in alerts] == ["DiskFull"]
    assert alerts[0]["labels"]["payload"] == "<script>alert(1)</script>"  # data, escaped by JSON only
    assert set(alerts[0]) >= {"annotations", "receivers", "fingerprint", "startsAt", "updatedAt", "endsAt"}
    groups = harness.request("GET", "/api/v2/alerts/groups").json()
    assert [(g["labels"], len(g["alerts"])) for g in groups] == [({"job": "api"}, 2)]
    assert harness.request("GET", "/api/v2/receivers").json() == [{"name": "default"}]


def test_bad_filter_is_a_400_json_string(api: Callable[..., tuple[Harness, HandFollower, list[str]]]) -> None:
    harness, _, _ = api()
    reply = harness.request("GET", "/api/v2/alerts", params=[("filter", "alertname")])
    assert reply.status == 400
    message = reply.json()
    assert isinstance(message, str) and "bad matcher format" in message and 'filter=alertname="' in message


def test_reads_need_the_token_when_one_is_set(
    api: Callable[..., tuple[Harness, HandFollower, list[str]]],
) -> None:
    harness, _, _ = api(bearer_token=TOKEN)
    for method, path in (("GET", "/api/v2/alerts"), ("GET", "/api/v2/silences"), ("GET", "/api/v2/status")):
        reply = harness.request(method, path)
        assert reply.status == 401, path
        assert reply.headers["WWW-Authenticate"].startswith("Bearer")
    ok = harness.request("GET", "/api/v2/alerts", headers={"Authorization": f"Bearer {TOKEN}"})
    assert ok.status == 200


def test_not_caught_up_is_503_with_retry_after(
    api: Callable[..., tuple[Harness, HandFollower, list[str]]],
) -> None:
    harness, _, _ = api(ready=False)
    reply = harness.request("GET", "/api/v2/alerts")
    assert reply.status == 503 and reply.headers["Retry-After"]
    assert "read model is not ready" in reply.json()
    status = harness.request("GET", "/api/v2/status")
    assert status.status == 200 and status.json()["cluster"]["status"] == "settling"


def test_status_shape(api: Callable[..., tuple[Harness, HandFollower, list[str]]]) -> None:
    harness, _, _ = api()
    doc = harness.request("GET", "/api/v2/status").json()
    assert set(doc) >= {"cluster", "versionInfo", "config", "uptime"}
    assert doc["cluster"] == {"name": "stormwatch", "status": "ready", "peers": []}
    assert set(doc["versionInfo"]) == {"version", "revision", "branch", "buildUser", "buildDate", "goVersion"}
    assert isinstance(doc["config"]["original"], str)
    assert doc["stormwatch"]["readModel"]["alerts"] == 2


def test_silence_lifecycle(api: Callable[..., tuple[Harness, HandFollower, list[str]]]) -> None:
    harness, _, published = api()
    reply = harness.post_json("/api/v2/silences", postable())
    assert reply.status == 200, reply.body
    silence_id = reply.json()["silenceID"]
    assert published == [f"add {silence_id} by alice"]
    got = harness.request("GET", f"/api/v2/silence/{silence_id}").json()
    assert got["status"] == {"state": "active"} and got["createdBy"] == "alice"
    listed = harness.request("GET", "/api/v2/silences", params=[("filter", "alertname=ApiDown")]).json()
    assert [s["id"] for s in listed] == [silence_id]
    alerts = harness.request("GET", "/api/v2/alerts", params=[("silenced", "false")]).json()
    assert [a["fingerprint"] for a in alerts] == ["fb"]  # fa is silenced now
    # An update keeps the id while the silence is active
    reply = harness.post_json("/api/v2/silences", postable(id=silence_id, comment="longer"))
    assert reply.json() == {"silenceID": silence_id}
    assert harness.request("GET", f"/api/v2/silence/{silence_id}").json()["comment"] == "longer"
    # Expire
    assert harness.request("DELETE", f"/api/v2/silence/{silence_id}").status == 200
    assert published[-1] == f"expire {silence_id} by alertmanager-api"
    assert harness.request("GET", f"/api/v2/silence/{silence_id}").json()["status"]["state"] == "expired"
    assert harness.request("DELETE", f"/api/v2/silence/{silence_id}").status == 200  # again: nothing to do
    assert len(published) == 3
    # Updating an expired silence makes a new one, as in Alertmanager
    reply = harness.post_json("/api/v2/silences", postable(id=silence_id))
    assert reply.status == 200 and reply.json()["silenceID"] != silence_id


def test_silence_errors(api: Callable[..., tuple[Harness, HandFollower, list[str]]]) -> None:
    harness, _, published = api()
    missing = harness.request("GET", "/api/v2/silence/nope")
    assert missing.status == 404 and "silence nope not found" in missing.json()
    assert harness.request("DELETE", "/api/v2/silence/nope").status == 404
    reply = harness.post_json("/api/v2/silences", postable(id="nope"))
    assert reply.status == 404 and "leave id out to create a new silence" in reply.json()
    reply = harness.post_json("/api/v2/silences", postable(endsAt=iso(timedelta(minutes=-1))))
    assert reply.status == 400 and "would" in reply.json()
    everything = [{"name": "alertname", "value": ".*", "isRegex": True}]
    reply = harness.post_json("/api/v2/silences", postable(matchers=everything))
    assert reply.status == 400 and "match every alert" in reply.json()
    reply = harness.request(
        "POST", "/api/v2/silences", data=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert reply.status == 400 and "not valid JSON" in reply.json()
    reply = harness.request(
        "POST", "/api/v2/silences", data=orjson.dumps(postable()), headers={"Content-Type": "text/plain"}
    )
    assert reply.status == 415
    assert published == []


def test_post_alerts_still_ingests(api: Callable[..., tuple[Harness, HandFollower, list[str]]]) -> None:
    """POST /api/v2/alerts and GET /api/v2/alerts share a path: the POST still reaches ingest
    (here its Kafka is unreachable, so the real answer is 503)."""
    harness, _, _ = api()
    reply = harness.post_json("/api/v2/alerts", [{"labels": {"alertname": "X"}}])
    assert reply.status == 503
    assert harness.request("PUT", "/api/v2/alerts").status == 405


def test_silence_matchers_roundtrip(api: Callable[..., tuple[Harness, HandFollower, list[str]]]) -> None:
    harness, follower, _ = api()
    matchers = [
        {"name": "job", "value": "api|web", "isRegex": True, "isEqual": False},
        {"name": "alertname", "value": "A", "isRegex": False, "isEqual": False},
        {"name": "env", "value": "prod", "isRegex": False},
    ]
    silence_id = harness.post_json("/api/v2/silences", postable(matchers=matchers)).json()["silenceID"]
    got = harness.request("GET", f"/api/v2/silence/{silence_id}").json()
    assert got["matchers"] == [{**m, "isEqual": m.get("isEqual", True)} for m in matchers]
    stored = follower.model.silence(silence_id, NOW_MS)
    assert stored is not None
    assert [str(m) for m in stored.silence.matchers] == [
        str(Matcher.parse(t)) for t in ('job!~"api|web"', 'alertname!="A"', 'env="prod"')
    ]
