"""The operator surface outside Python: alert rules, Prometheus configs, the Grafana dashboard,
docker-compose.yml, the Dockerfile and the Kubernetes manifests.

Every PromQL expression may only name metrics (and labels) that stormwatch really registers, so
a renamed metric breaks this test instead of silently emptying a panel or muting an alert.
promtool, when on PATH, checks syntax and runs unit tests of the alert rules.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.metrics import MetricWrapperBase

from stormwatch.cli import build_parser
from stormwatch.config import Settings
from stormwatch.gateway import gateway_metrics
from stormwatch.metrics import pipeline_metrics
from tests.kit.paths import ROOT

PROM_DIR = ROOT / "deploy" / "prometheus"
RULE_FILES = [PROM_DIR / "alerts.yml", PROM_DIR / "pipeline-rules.yml"]
PIPELINE_RULES = PROM_DIR / "pipeline-rules.yml"
PROM_CONFIGS = [PROM_DIR / "prometheus.yml", PROM_DIR / "prometheus-compose.yml"]
GRAFANA = ROOT / "deploy" / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "stormwatch.json"
COMPOSE = ROOT / "docker-compose.yml"
K8S = ROOT / "deploy" / "kubernetes"
NOTIFY_FILE = ROOT / "deploy" / "notify.yaml"
NOTIFY_URL_ENV = "NOTIFY_WEBHOOK_URL"  # deploy/notify.yaml's webhook reads its URL from it

# The /metrics port of each process, everywhere it is configured.
METRICS_PORTS = {
    "gateway": 9095,
    "ingest": 9096,
    "correlator": 9097,
    "linker": 9094,
    "agent": 9098,
    "executor": 9099,
    "notifier": 9101,
}
STORMWATCH_JOBS = {f"stormwatch-{name}" for name in METRICS_PORTS}
PROMETHEUS_LABELS = {"job", "instance"}  # added by the scrape
PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset"}


# ------------------------------------------------------------------------------------- registered metrics


def _metric_holders() -> list[Any]:
    holders: list[Any] = [pipeline_metrics(), gateway_metrics()]
    try:
        from stormwatch.agents import metrics as agent_metrics_module
    except ImportError:  # the agent package is optional for this check
        return holders
    for factory in ("agent_metrics", "executor_metrics", "mitigation_metrics", "notifier_metrics"):
        make = getattr(agent_metrics_module, factory, None)
        if callable(make):
            holders.append(make())
    return holders


def _series_names(name: str, kind: str) -> list[str]:
    suffixes = {
        "counter": ["_total", "_created"],
        "histogram": ["_bucket", "_sum", "_count", "_created"],
        "summary": ["_sum", "_count", "_created", ""],
        "gauge": [""],
        "info": ["_info"],
        "enum": [""],
    }[kind]
    return [name + suffix for suffix in suffixes]


def registered_series() -> dict[str, set[str]]:
    """Every series name stormwatch can export -> its label names (``le`` for histogram buckets)."""
    series: dict[str, set[str]] = {"up": set()}
    for holder in _metric_holders():
        for metric in vars(holder).values():
            if not isinstance(metric, MetricWrapperBase):
                continue
            labels = set(metric._labelnames)
            for name in _series_names(metric._name, str(metric._type)):
                series[name] = labels | ({"le"} if name.endswith("_bucket") else set())
    return series


KNOWN = registered_series()


def metric_names(expr: str) -> set[str]:
    return set(re.findall(r"\bstormwatch_[A-Za-z0-9_]+", expr))


def label_names(expr: str) -> set[str]:
    """Label names an expression groups by or matches on."""
    names: set[str] = set()
    for group in re.findall(r"\b(?:by|without|on|ignoring)\s*\(([^)]*)\)", expr):
        names |= {n.strip() for n in group.split(",") if n.strip()}
    for matchers in re.findall(r"\{([^{}]*)\}", expr):
        names |= set(re.findall(r"([A-Za-z_][A-Za-z0-9_]*)\s*(?:=~|!~|!=|=)", matchers))
    return names


def check_expression(expr: str, where: str) -> set[str]:
    """Assert ``expr`` names only registered metrics and their labels; return the labels it may use."""
    names = metric_names(expr)
    unknown = sorted(n for n in names if n not in KNOWN)
    assert not unknown, f"{where}: {unknown} are not metrics stormwatch registers (expr: {expr})"
    allowed = set(PROMETHEUS_LABELS)
    for name in names:
        allowed |= KNOWN[name]
    bad = sorted(label_names(expr) - allowed - {"__name__"})
    assert not bad, f"{where}: labels {bad} do not exist on {sorted(names) or ['up']} (expr: {expr})"
    return allowed


def test_registered_series_cover_the_issue_list() -> None:
    """The metrics the operator surface promises (names per Prometheus conventions)."""
    expected = {
        "stormwatch_alerts_received_total": {"source", "format"},
        "stormwatch_dead_letters_total": {"reason"},
        "stormwatch_alerts_deduplicated_total": set(),
        "stormwatch_alerts_suppressed_total": {"reason"},
        "stormwatch_alerts_grouped_total": set(),
        "stormwatch_incidents_opened_total": {"severity", "rule"},
        "stormwatch_incidents_resolved_total": {"severity", "rule"},
        "stormwatch_incidents_reopened_total": {"severity", "rule"},
        "stormwatch_open_incidents": {"partition"},
        "stormwatch_time_to_acknowledge_seconds_bucket": {"severity", "rule", "le"},
        "stormwatch_time_to_resolve_seconds_bucket": {"severity", "rule", "le"},
        "stormwatch_processing_latency_seconds_bucket": {"le"},
        "stormwatch_consumer_lag": {"topic", "partition"},
        "stormwatch_transaction_seconds_bucket": {"stage", "le"},
        "stormwatch_gateway_requests_total": {"endpoint", "status"},
        "stormwatch_gateway_kafka_ready": set(),
        # linking (issue #12)
        "stormwatch_link_notes_total": set(),
        "stormwatch_link_commands_late_total": set(),
        "stormwatch_link_decisions_total": {"decision", "relation"},
        "stormwatch_linker_late_notes_total": set(),
        "stormwatch_root_causes_total": {"kind"},
        # notifications (issue #13)
        "stormwatch_notifications_total": {"receiver", "integration", "outcome"},
        "stormwatch_notification_delivery_seconds_bucket": {"receiver", "integration", "le"},
        "stormwatch_notification_send_seconds_bucket": {"receiver", "integration", "le"},
        "stormwatch_notification_queue_depth": set(),
        "stormwatch_notifier_skipped_records_total": set(),
        "stormwatch_mtta_notified_seconds_bucket": {"severity", "rule", "le"},
    }
    for name, labels in expected.items():
        assert name in KNOWN, name
        assert KNOWN[name] == labels, (name, KNOWN[name])
    for name in KNOWN:
        if name != "up":
            assert name.startswith("stormwatch_"), name
            assert not name.endswith("_total_total"), name


# ------------------------------------------------------------------------------------- alert rules


def load_rules(path: Path) -> list[dict[str, Any]]:
    doc = yaml.safe_load(path.read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


@pytest.mark.parametrize("path", RULE_FILES, ids=lambda p: p.name)
def test_rule_files_name_known_metrics_and_labels(path: Path) -> None:
    for rule in load_rules(path):
        name = rule.get("alert") or rule.get("record")
        allowed = check_expression(str(rule["expr"]), f"{path.name}:{name}")
        templates = " ".join(str(v) for v in rule.get("annotations", {}).values())
        used = set(re.findall(r"\$labels\.([A-Za-z_][A-Za-z0-9_]*)", templates))
        assert used <= allowed | {"job", "instance"}, f"{name}: annotations use {used - allowed}"


def test_pipeline_rules_cover_the_pipeline() -> None:
    rules = {r["alert"]: r for r in load_rules(PIPELINE_RULES)}
    exprs = " ".join(str(r["expr"]) for r in rules.values())
    for needed in (
        "stormwatch_consumer_lag",
        "stormwatch_dead_letters_total",
        "stormwatch_gateway_kafka_ready",
        "stormwatch_gateway_requests_total",
        "stormwatch_transaction_seconds_bucket",
        "stormwatch_oldest_open_incident_timestamp_seconds",
        'stormwatch_consumer_lag{topic="stormwatch.linker.input"}',
        "stormwatch_link_commands_late_total",
        'stormwatch_notifications_total{outcome=~"failed|given_up"}',
        'stormwatch_notifications_total{outcome="given_up"}',
        'stormwatch_consumer_lag{job="stormwatch-notifier"}',
        "up{",
    ):
        assert needed in exprs, needed
    assert 'topic="' + Settings().topics.linker_input + '"' in exprs, "the linker lag alert names its topic"
    for name, rule in rules.items():
        assert name.startswith("Stormwatch"), name
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}, name
        assert rule["labels"]["component"] == "stormwatch", name
        assert {"summary", "description"} <= set(rule["annotations"]), name
    # Every job the rules expect exists in both scrape configurations.
    jobs = set(re.findall(r'job="(stormwatch-[a-z]+)"', exprs))
    assert jobs and jobs <= STORMWATCH_JOBS


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        pytest.skip("promtool is not installed (Debian: apt-get install prometheus)")
    return found


def run(args: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=60, cwd=cwd, check=False)


@pytest.mark.parametrize("path", RULE_FILES, ids=lambda p: p.name)
def test_promtool_checks_rules(path: Path) -> None:
    result = run([promtool(), "check", "rules", str(path)])
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("path", PROM_CONFIGS, ids=lambda p: p.name)
def test_promtool_checks_config(path: Path) -> None:
    result = run([promtool(), "check", "config", str(path)])
    assert result.returncode == 0, result.stdout + result.stderr


# Alert unit tests: input series and the alerts that must (or must not) fire. Annotations are
# stripped from the rules under test (promtool compares them verbatim); `check rules` above
# validates their templates.
ALERT_TESTS: list[dict[str, Any]] = [
    {
        "interval": "1m",
        "input_series": [
            {"series": 'up{job="stormwatch-ingest",instance="i:9096"}', "values": "1 1 0 0 0 0 0 0"},
            {"series": 'up{job="stormwatch-correlator",instance="c:9097"}', "values": "1x10"},
            {"series": 'up{job="stormwatch-gateway",instance="g:9095"}', "values": "1x10"},
        ],
        "alert_rule_test": [
            {"eval_time": "1m", "alertname": "StormwatchWorkerDown", "exp_alerts": []},
            {"eval_time": "1m", "alertname": "StormwatchStageDown", "exp_alerts": []},
            {"eval_time": "3m", "alertname": "StormwatchWorkerDown", "exp_alerts": []},  # pending
            {
                "eval_time": "5m",
                "alertname": "StormwatchWorkerDown",
                "exp_alerts": [
                    {
                        "exp_labels": {
                            "severity": "warning",
                            "component": "stormwatch",
                            "job": "stormwatch-ingest",
                            "instance": "i:9096",
                        }
                    }
                ],
            },
            {
                "eval_time": "5m",
                "alertname": "StormwatchStageDown",
                "exp_alerts": [
                    {
                        "exp_labels": {
                            "severity": "critical",
                            "component": "stormwatch",
                            "job": "stormwatch-ingest",
                        }
                    }
                ],
            },
        ],
    },
    {
        # A stage whose targets vanished from service discovery has no `up` series at all.
        "interval": "1m",
        "input_series": [
            {"series": 'up{job="stormwatch-ingest",instance="i:9096"}', "values": "1x10"},
            {"series": 'up{job="stormwatch-correlator",instance="c:9097"}', "values": "1x10"},
        ],
        "alert_rule_test": [
            {
                "eval_time": "5m",
                "alertname": "StormwatchStageDown",
                "exp_alerts": [
                    {
                        "exp_labels": {
                            "severity": "critical",
                            "component": "stormwatch",
                            "job": "stormwatch-gateway",
                        }
                    }
                ],
            },
        ],
    },
    {
        "interval": "1m",
        "input_series": [
            {
                "series": 'stormwatch_consumer_lag{job="stormwatch-ingest",instance="i",topic="alerts.raw",partition="0"}',
                "values": "0+5000x30",
            },
            {
                "series": 'stormwatch_consumer_lag{job="stormwatch-ingest",instance="i",topic="alerts.raw",partition="1"}',
                "values": "0+5000x30",
            },
            {
                "series": 'stormwatch_consumer_lag{job="stormwatch-correlator",instance="c",topic="corr",partition="0"}',
                "values": "0x30",
            },
        ],
        "alert_rule_test": [
            {"eval_time": "5m", "alertname": "StormwatchConsumerLagHigh", "exp_alerts": []},
            {
                "eval_time": "20m",
                "alertname": "StormwatchConsumerLagHigh",
                "exp_alerts": [
                    {
                        "exp_labels": {
                            "severity": "warning",
                            "component": "stormwatch",
                            "job": "stormwatch-ingest",
                            "topic": "alerts.raw",
                        }
                    }
                ],
            },
            {"eval_time": "10m", "alertname": "StormwatchConsumerLagGrowing", "exp_alerts": []},
            {
                "eval_time": "20m",
                "alertname": "StormwatchConsumerLagGrowing",
                "exp_alerts": [
                    {
                        "exp_labels": {
                            "severity": "warning",
                            "component": "stormwatch",
                            "job": "stormwatch-ingest",
                            "topic": "alerts.raw",
                        }
                    }
                ],
            },
        ],
    },
    {
        "interval": "1m",
        "input_series": [
            {
                "series": 'stormwatch_dead_letters_total{job="stormwatch-ingest",instance="i",reason="invalid_json"}',
                "values": "0+10x30",
            },
            {
                "series": 'stormwatch_dead_letters_total{job="stormwatch-ingest",instance="i",reason="too_large"}',
                "values": "0 0 0 0 0 0 1000 1000 1000 1000 1000 1000 1000 1000 1000 1000 1000 1000",
            },
        ],
        "alert_rule_test": [
            {"eval_time": "10m", "alertname": "StormwatchDeadLettersGrowing", "exp_alerts": []},
            {
                "eval_time": "20m",
                "alertname": "StormwatchDeadLettersGrowing",
                "exp_alerts": [
                    {
                        "exp_labels": {
                            "severity": "warning",
                            "component": "stormwatch",
                            "reason": "invalid_json",
                        }
                    }
                ],
            },
            {
                "eval_time": "8m",
                "alertname": "StormwatchDeadLetterBurst",
                "exp_alerts": [
                    {"exp_labels": {"severity": "warning", "component": "stormwatch", "reason": "too_large"}}
                ],
            },
            {"eval_time": "16m", "alertname": "StormwatchDeadLetterBurst", "exp_alerts": []},
        ],
    },
    {
        "interval": "1m",
        "input_series": [
            {
                "series": 'stormwatch_gateway_kafka_ready{job="stormwatch-gateway",instance="g"}',
                "values": "1 1 0 0 0 0 0 0 0 0",
            },
            {
                "series": 'stormwatch_gateway_requests_total{job="stormwatch-gateway",instance="g",endpoint="prometheus",status="503"}',
                "values": "0 0 0+30x10",
            },
            {
                "series": 'stormwatch_gateway_requests_total{job="stormwatch-gateway",instance="g",endpoint="prometheus",status="200"}',
                "values": "0+600x12",
            },
        ],
        "alert_rule_test": [
            {"eval_time": "2m", "alertname": "StormwatchGatewayKafkaNotReady", "exp_alerts": []},
            {
                "eval_time": "4m",
                "alertname": "StormwatchGatewayKafkaNotReady",
                "exp_alerts": [
                    {
                        "exp_labels": {
                            "severity": "critical",
                            "component": "stormwatch",
                            "job": "stormwatch-gateway",
                            "instance": "g",
                        }
                    }
                ],
            },
            {
                "eval_time": "10m",
                "alertname": "StormwatchGatewayRejecting",
                "exp_alerts": [
                    {
                        "exp_labels": {
                            "severity": "warning",
                            "component": "stormwatch",
                            "job": "stormwatch-gateway",
                            "instance": "g",
                        }
                    }
                ],
            },
        ],
    },
    {
        "interval": "1m",
        "input_series": [
            *[
                {
                    "series": f'stormwatch_transaction_seconds_bucket{{job="stormwatch-correlator",instance="c",stage="correlator",le="{le}"}}',
                    "values": values,
                }
                for le, values in (("0.1", "0x20"), ("5", "0x20"), ("10", "0+10x20"), ("+Inf", "0+10x20"))
            ],
            *[
                {
                    "series": f'stormwatch_transaction_seconds_bucket{{job="stormwatch-ingest",instance="i",stage="ingest",le="{le}"}}',
                    "values": "0+50x20",
                }
                for le in ("0.1", "5", "10", "+Inf")
            ],
        ],
        "alert_rule_test": [
            {"eval_time": "5m", "alertname": "StormwatchTransactionsSlow", "exp_alerts": []},
            {
                "eval_time": "15m",
                "alertname": "StormwatchTransactionsSlow",
                "exp_alerts": [
                    {
                        "exp_labels": {
                            "severity": "warning",
                            "component": "stormwatch",
                            "job": "stormwatch-correlator",
                            "stage": "correlator",
                        }
                    }
                ],
            },
        ],
    },
    {
        "interval": "1m",
        "input_series": [
            {
                "series": 'stormwatch_oldest_open_incident_timestamp_seconds{job="stormwatch-correlator",instance="c",partition="3"}',
                "values": "0x300",
            },
            {
                "series": 'stormwatch_oldest_open_incident_timestamp_seconds{job="stormwatch-correlator",instance="c",partition="4"}',
                "values": "10000x300",
            },
        ],
        "alert_rule_test": [
            {"eval_time": "3h", "alertname": "StormwatchIncidentOpenTooLong", "exp_alerts": []},
            {
                "eval_time": "4h10m",
                "alertname": "StormwatchIncidentOpenTooLong",
                "exp_alerts": [
                    {
                        "exp_labels": {
                            "severity": "warning",
                            "component": "stormwatch",
                            "job": "stormwatch-correlator",
                            "partition": "3",
                        }
                    }
                ],
            },
        ],
    },
    {
        # Linking (issue #12): the linker behind on its input topic; the correlator applying late.
        "interval": "1m",
        "input_series": [
            {
                "series": 'stormwatch_consumer_lag{job="stormwatch-linker",instance="l",topic="stormwatch.linker.input",partition="0"}',
                "values": "0 0 2000x20",
            },
            {
                # the same lag on the correlator's input is StormwatchConsumerLagHigh's business
                "series": 'stormwatch_consumer_lag{job="stormwatch-correlator",instance="c",topic="stormwatch.correlator.input",partition="0"}',
                "values": "2000x22",
            },
            {
                "series": 'stormwatch_link_commands_late_total{job="stormwatch-correlator",instance="c"}',
                "values": "0 0 0 0 0 0 0 0 0 0 3 3 3 3 3 3 3 3 3 3 3 3 3 3 3 3 3 3 3 3 3 3 3 3 3",
            },
            {"series": 'up{job="stormwatch-linker",instance="l:9094"}', "values": "1x30"},
            {"series": 'up{job="stormwatch-ingest",instance="i:9096"}', "values": "1x30"},
            {"series": 'up{job="stormwatch-correlator",instance="c:9097"}', "values": "1x30"},
            {"series": 'up{job="stormwatch-gateway",instance="g:9095"}', "values": "1x30"},
        ],
        "alert_rule_test": [
            {"eval_time": "5m", "alertname": "StormwatchLinkerLagHigh", "exp_alerts": []},  # pending
            {
                "eval_time": "8m",
                "alertname": "StormwatchLinkerLagHigh",
                "exp_alerts": [
                    {
                        "exp_labels": {
                            "severity": "warning",
                            "component": "stormwatch",
                            "job": "stormwatch-linker",
                            "topic": "stormwatch.linker.input",
                        }
                    }
                ],
            },
            {"eval_time": "12m", "alertname": "StormwatchLinkCommandsLate", "exp_alerts": []},  # pending
            {
                "eval_time": "16m",
                "alertname": "StormwatchLinkCommandsLate",
                "exp_alerts": [
                    {
                        "exp_labels": {
                            "severity": "warning",
                            "component": "stormwatch",
                            "job": "stormwatch-correlator",
                        }
                    }
                ],
            },
            # no longer increasing: 10 minutes after the last late command it stops
            {"eval_time": "30m", "alertname": "StormwatchLinkCommandsLate", "exp_alerts": []},
            {"eval_time": "16m", "alertname": "StormwatchStageDown", "exp_alerts": []},
        ],
    },
    {
        # Notifications (issue #13): one receiver down (every attempt fails, some are given up), one
        # healthy with a rare retry; the notifier behind on the incident log; a notifier down.
        "interval": "1m",
        "input_series": [
            *[
                {
                    "series": f'stormwatch_notifications_total{{job="stormwatch-notifier",instance="n",receiver="{receiver}",integration="{integration}",outcome="{outcome}"}}',
                    "values": values,
                }
                for receiver, integration, outcome, values in (
                    ("oncall", "pagerduty", "sent", "0 10 20x30"),
                    ("oncall", "pagerduty", "failed", "0 0 0+10x30"),
                    ("oncall", "pagerduty", "given_up", "0x10 1x25"),
                    ("team", "webhook", "sent", "0+10x32"),
                    ("team", "webhook", "failed", "0+1x32"),
                )
            ],
            {
                "series": 'stormwatch_consumer_lag{job="stormwatch-notifier",instance="n",topic="incidents.events",partition="0"}',
                "values": "0 0 800x30",
            },
            {
                # the agent reads the same topic: its lag is StormwatchConsumerLagHigh's business
                "series": 'stormwatch_consumer_lag{job="stormwatch-agent",instance="a",topic="incidents.events",partition="0"}',
                "values": "5000x32",
            },
            {"series": 'up{job="stormwatch-notifier",instance="n:9101"}', "values": "1 1 0x30"},
            {"series": 'up{job="stormwatch-ingest",instance="i:9096"}', "values": "1x32"},
            {"series": 'up{job="stormwatch-correlator",instance="c:9097"}', "values": "1x32"},
            {"series": 'up{job="stormwatch-gateway",instance="g:9095"}', "values": "1x32"},
        ],
        "alert_rule_test": [
            {"eval_time": "10m", "alertname": "StormwatchReceiverFailing", "exp_alerts": []},  # pending
            {
                "eval_time": "20m",
                "alertname": "StormwatchReceiverFailing",
                "exp_alerts": [
                    {
                        "exp_labels": {
                            "severity": "critical",
                            "component": "stormwatch",
                            "job": "stormwatch-notifier",
                            "receiver": "oncall",
                            "integration": "pagerduty",
                        }
                    }
                ],
            },
            {"eval_time": "5m", "alertname": "StormwatchNotificationsGivenUp", "exp_alerts": []},
            {
                "eval_time": "12m",
                "alertname": "StormwatchNotificationsGivenUp",
                "exp_alerts": [
                    {
                        "exp_labels": {
                            "severity": "warning",
                            "component": "stormwatch",
                            "job": "stormwatch-notifier",
                            "receiver": "oncall",
                            "integration": "pagerduty",
                        }
                    }
                ],
            },
            {"eval_time": "30m", "alertname": "StormwatchNotificationsGivenUp", "exp_alerts": []},
            {"eval_time": "5m", "alertname": "StormwatchNotifierLagHigh", "exp_alerts": []},  # pending
            {
                "eval_time": "8m",
                "alertname": "StormwatchNotifierLagHigh",
                "exp_alerts": [
                    {
                        "exp_labels": {
                            "severity": "warning",
                            "component": "stormwatch",
                            "job": "stormwatch-notifier",
                            "topic": "incidents.events",
                        }
                    }
                ],
            },
            {
                "eval_time": "8m",
                "alertname": "StormwatchStageDown",
                "exp_alerts": [
                    {
                        "exp_labels": {
                            "severity": "critical",
                            "component": "stormwatch",
                            "job": "stormwatch-notifier",
                        }
                    }
                ],
            },
        ],
    },
]


def test_pipeline_alerts_fire_when_they_should(tmp_path: Path) -> None:
    tool = promtool()
    doc = yaml.safe_load(PIPELINE_RULES.read_text())
    for group in doc["groups"]:
        for rule in group["rules"]:
            rule.pop("annotations", None)
    rules = tmp_path / "rules.yml"
    rules.write_text(yaml.safe_dump(doc))
    tested = {case["alertname"] for test in ALERT_TESTS for case in test["alert_rule_test"]}
    assert tested == {r["alert"] for r in load_rules(PIPELINE_RULES)}, "every alert needs a test"
    spec = tmp_path / "tests.yml"
    spec.write_text(
        yaml.safe_dump({"rule_files": [str(rules)], "evaluation_interval": "1m", "tests": ALERT_TESTS})
    )
    result = run([tool, "test", "rules", str(spec)])
    assert result.returncode == 0, result.stdout + result.stderr


# ------------------------------------------------------------------------------------- scrape configs


def scrape_jobs(path: Path) -> dict[str, dict[str, Any]]:
    doc = yaml.safe_load(path.read_text())
    return {job["job_name"]: job for job in doc["scrape_configs"]}


def job_ports(job: dict[str, Any]) -> set[int]:
    ports = {int(t.rsplit(":", 1)[1]) for sc in job.get("static_configs", []) for t in sc["targets"]}
    return ports | {int(sd["port"]) for sd in job.get("dns_sd_configs", [])}


def test_scrape_configs_have_every_stormwatch_process() -> None:
    host, compose = (scrape_jobs(p) for p in PROM_CONFIGS)
    for jobs in (host, compose):
        assert {name for name in jobs if name.startswith("stormwatch-")} == STORMWATCH_JOBS
        for process, port in METRICS_PORTS.items():
            assert job_ports(jobs[f"stormwatch-{process}"]) == {port}, process
    for path in PROM_CONFIGS:
        doc = yaml.safe_load(path.read_text())
        assert doc["rule_files"] == ["alerts.yml", "pipeline-rules.yml"], path.name
        assert doc["alerting"]["alertmanagers"][0]["api_version"] == "v2"
    # The host configuration keeps pushing alerts to a gateway on this machine.
    doc = yaml.safe_load(PROM_CONFIGS[0].read_text())
    assert doc["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"] == ["127.0.0.1:9095"]
    for job in STORMWATCH_JOBS:
        for sc in host[job]["static_configs"]:
            assert all(t.startswith("127.0.0.1:") for t in sc["targets"])


# ------------------------------------------------------------------------------------- grafana


def dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return data


def panels(dash: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in dash["panels"]:
        yield panel
        yield from panel.get("panels", [])


def datasource_uid() -> str:
    doc = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text())
    (source,) = doc["datasources"]
    assert source["type"] == "prometheus"
    return str(source["uid"])


def grafana_to_promql(expr: str) -> str:
    return expr.replace("$__rate_interval", "1m").replace("$window", "1h")


def test_dashboard_queries_name_known_metrics_and_labels() -> None:
    dash = dashboard()
    count = 0
    for panel in panels(dash):
        for target in panel.get("targets", []):
            where = f"panel {panel['title']!r}"
            allowed = check_expression(target["expr"], where)
            legend = set(
                re.findall(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}", target.get("legendFormat", ""))
            )
            assert legend <= allowed, f"{where}: legend uses {legend - allowed}"
            count += 1
    assert count >= 30


def test_dashboard_shows_what_the_issue_asks_for() -> None:
    exprs = " ".join(t["expr"] for p in panels(dashboard()) for t in p.get("targets", []))
    mitigation = (
        "stormwatch_mitigation_commands_total"
        if "stormwatch_mitigation_commands_total" in KNOWN
        else "stormwatch_executor_actions_total"
    )
    for needed in (
        "stormwatch_alerts_received_total",  # throughput, suppression ratio
        "stormwatch_incident_events_total",
        "stormwatch_alerts_deduplicated_total",
        "stormwatch_alerts_suppressed_total",
        "stormwatch_incidents_opened_total",
        "stormwatch_incidents_resolved_total",
        "stormwatch_open_incidents",
        "stormwatch_time_to_acknowledge_seconds_bucket",
        "stormwatch_time_to_resolve_seconds_bucket",
        "stormwatch_processing_latency_seconds_bucket",
        "stormwatch_consumer_lag",
        "stormwatch_dead_letters_total",
        "stormwatch_transaction_seconds_bucket",
        "stormwatch_gateway_requests_total",
        mitigation,
        # linking (issue #12): root causes, decisions, suppression after linking, lateness
        "stormwatch_root_causes_total",
        "stormwatch_link_decisions_total",
        'stormwatch_incident_events_total{type="linked"}',
        "stormwatch_link_commands_late_total",
        "stormwatch_linker_late_notes_total",
    ):
        assert needed in exprs, needed


def test_dashboard_structure() -> None:
    dash = dashboard()
    uid = datasource_uid()
    assert dash["schemaVersion"] >= 39
    assert dash["uid"] == "stormwatch-overview"
    ids = [p["id"] for p in panels(dash)]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    variables = {v["name"] for v in dash["templating"]["list"]}
    cells: set[tuple[int, int]] = set()
    for panel in panels(dash):
        pos = panel["gridPos"]
        assert pos["x"] >= 0 and pos["x"] + pos["w"] <= 24, panel["title"]
        for x in range(pos["x"], pos["x"] + pos["w"]):
            for y in range(pos["y"], pos["y"] + pos["h"]):
                assert (x, y) not in cells, f"panel {panel['title']!r} overlaps another"
                cells.add((x, y))
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": uid}, panel["title"]
        assert panel.get("description"), f"panel {panel['title']!r} needs a description"
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == uid
            used = set(re.findall(r"\$([A-Za-z_]+)", target["expr"])) - {"__rate_interval"}
            assert used <= variables, f"{panel['title']}: undefined variables {used - variables}"


def test_dashboard_promql_parses(tmp_path: Path) -> None:
    """promtool parses each query as a recording rule (Grafana variables substituted)."""
    tool = promtool()
    rules = [
        {"record": f"dashboard:query_{i}", "expr": grafana_to_promql(t["expr"])}
        for i, t in enumerate(t for p in panels(dashboard()) for t in p.get("targets", []))
    ]
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = run([tool, "check", "rules", str(path)])
    assert result.returncode == 0, result.stdout + result.stderr


def test_grafana_provisioning_points_at_the_dashboards() -> None:
    doc = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "stormwatch.yml").read_text())
    (provider,) = doc["providers"]
    compose = yaml.safe_load(COMPOSE.read_text())
    mounts = dict(_bind_mounts(compose["services"]["grafana"]))
    assert mounts[provider["options"]["path"]] == GRAFANA / "dashboards"
    assert mounts["/etc/grafana/provisioning"] == GRAFANA / "provisioning"
    env = compose["services"]["grafana"]["environment"]
    home = Path(env["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"])
    assert mounts[str(home.parent)] / home.name == DASHBOARD


# ------------------------------------------------------------------------------------- docker compose


def _expand(value: str) -> str:
    """``${VAR:-default}`` as compose expands it with VAR unset."""
    return re.sub(r"\$\{[A-Za-z_][A-Za-z0-9_]*:-([^}]*)\}", r"\1", value)


def _bind_mounts(service: dict[str, Any]) -> Iterator[tuple[str, Path]]:
    """(container path, host path) of each bind mount (named volumes left out)."""
    for volume in service.get("volumes", []):
        source, target = _expand(volume).split(":")[:2]
        if source.startswith((".", "/")):
            yield target, (ROOT / source).resolve()


def compose_services() -> dict[str, dict[str, Any]]:
    services: dict[str, dict[str, Any]] = yaml.safe_load(COMPOSE.read_text())["services"]
    return services


def test_compose_has_the_full_stack() -> None:
    services = compose_services()
    assert set(services) == {
        "kafka",
        "topics",
        "ingest",
        "correlator",
        "linker",
        "agent",
        "executor",
        "gateway",
        "notifier",
        "notify-receiver",
        "prometheus",
        "grafana",
    }
    for name, service in services.items():
        assert service.get("image") or service.get("build"), name
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} beyond this machine"
        for dep, condition in service.get("depends_on", {}).items():
            assert dep in services, (name, dep)
            assert condition["condition"] in {
                "service_healthy",
                "service_completed_successfully",
                "service_started",
            }
            if condition["condition"] == "service_healthy":
                assert "healthcheck" in services[dep], dep
        for target, source in _bind_mounts(service):
            assert source.exists(), f"{name} mounts missing {source} at {target}"
        if name != "topics":
            assert "healthcheck" in service, f"{name} needs a healthcheck"
    assert services["kafka"]["image"] == "apache/kafka:4.1.1"
    assert services["topics"]["depends_on"] == {"kafka": {"condition": "service_healthy"}}
    assert services["topics"]["restart"] == "no"


def test_compose_commands_are_real_cli_invocations() -> None:
    parser = build_parser()
    services = compose_services()
    stages = {
        "topics": "topics",
        "ingest": "ingest",
        "correlator": "correlate",
        "linker": "link",
        "agent": "agent",
        "executor": "executor",
        "gateway": "gateway",
        "notifier": "notify",
        "notify-receiver": "demo-receiver",
    }
    for name, command in stages.items():
        service = services[name]
        assert service["image"] == "stormwatch:dev" and service["build"] == "."
        argv = [str(a) for a in service["command"]]
        assert argv[0] == command
        args = parser.parse_args(argv)  # exits (SystemExit) on an unknown flag
        assert callable(args.handler)
        if name != "topics":
            assert service["depends_on"] == {"topics": {"condition": "service_completed_successfully"}}
            assert service["environment"]["KAFKA_BOOTSTRAP_SERVERS"] == "kafka:19092"
        port = METRICS_PORTS.get(name)
        if name in {"ingest", "correlator", "linker", "agent", "executor", "notifier"}:
            assert args.metrics_port == port, name
            assert f"127.0.0.1:{port}/metrics" in " ".join(service["healthcheck"]["test"])
    agent = parser.parse_args([str(a) for a in services["agent"]["command"]])
    assert agent.workflows == "/etc/stormwatch/incident_workflow_config.yaml"
    gateway = parser.parse_args([str(a) for a in services["gateway"]["command"]])
    assert (gateway.host, gateway.port) == ("0.0.0.0", 9095)
    # The correlator and the linker read the same topology file, mounted from deploy/topology.yaml.
    topology = services["correlator"]["environment"]["STORMWATCH_CORRELATOR__TOPOLOGY_FILE"]
    assert services["linker"]["environment"]["STORMWATCH_CORRELATOR__TOPOLOGY_FILE"] == topology
    assert parser.parse_args([str(a) for a in services["linker"]["command"]]).topology == topology
    for name in ("correlator", "linker"):
        assert dict(_bind_mounts(services[name]))[topology] == ROOT / "deploy" / "topology.yaml"
    # The notifier sends deploy/notify.yaml's webhook to the demo receiver unless told otherwise.
    notifier = parser.parse_args([str(a) for a in services["notifier"]["command"]])
    assert dict(_bind_mounts(services["notifier"]))[notifier.notify_file] == ROOT / "deploy" / "notify.yaml"
    receiver = parser.parse_args([str(a) for a in services["notify-receiver"]["command"]])
    assert (receiver.host, receiver.port) == ("0.0.0.0", 9102)
    assert (
        _expand(services["notifier"]["environment"][NOTIFY_URL_ENV]) == "http://notify-receiver:9102/alerts"
    )
    assert "ports" not in services["notify-receiver"]
    assert "127.0.0.1:9102/-/ready" in " ".join(services["notify-receiver"]["healthcheck"]["test"])
    assert services["gateway"]["ports"] == ["127.0.0.1:9095:9095"]
    assert services["prometheus"]["ports"] == ["127.0.0.1:9090:9090"]
    assert services["grafana"]["ports"] == ["127.0.0.1:3000:3000"]
    assert services["grafana"]["environment"]["GF_AUTH_ANONYMOUS_ORG_ROLE"] == "Viewer"
    config = next(a for a in services["prometheus"]["command"] if a.startswith("--config.file="))
    assert (PROM_DIR / Path(config.split("=", 1)[1]).name).exists()


def test_docker_compose_config_validates(tmp_path: Path) -> None:
    """`docker compose config` checks the file against the Compose specification (no engine needed)."""
    if shutil.which("docker") and run(["docker", "compose", "version"]).returncode == 0:
        result = run(["docker", "compose", "-f", str(COMPOSE), "config", "--quiet"], cwd=ROOT)
    elif shutil.which("docker-compose"):
        # Compose v1 knows the specification except the top-level project name.
        doc = yaml.safe_load(COMPOSE.read_text())
        assert doc.pop("name") == "stormwatch"
        copy = tmp_path / "docker-compose.yml"
        copy.write_text(yaml.safe_dump(doc, sort_keys=False))
        result = run(["docker-compose", "--project-directory", str(ROOT), "-f", str(copy), "config", "-q"])
    else:
        pytest.skip("neither `docker compose` nor docker-compose is installed")
    assert result.returncode == 0, result.stdout + result.stderr


# ------------------------------------------------------------------------------------- Dockerfile


def dockerignore_patterns() -> list[str]:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def test_dockerfile() -> None:
    text = (ROOT / "Dockerfile").read_text()
    froms = re.findall(r"^FROM (\S+)", text, re.MULTILINE)
    assert froms and all(image == "python:3.11-slim" for image in froms)
    assert "-c constraints.txt" in text
    user = re.findall(r"^USER (\S+)", text, re.MULTILINE)
    assert user and user[-1].split(":")[0] not in {"root", "0"}
    entrypoint = re.search(r"^ENTRYPOINT (.+)$", text, re.MULTILINE)
    assert entrypoint and json.loads(entrypoint.group(1))[-1] == "stormwatch"
    ignored = dockerignore_patterns()
    for sources in re.findall(r"^COPY (?!--from)(.+) \S+$", text, re.MULTILINE):
        for source in sources.split():
            assert (ROOT / source).exists(), source
            assert not any(source == p or source.startswith(p.rstrip("/") + "/") for p in ignored), (
                f"{source} is excluded by .dockerignore"
            )
    for private in (".venv", "var", ".git", "tests"):
        assert private in ignored


# ------------------------------------------------------------------------------------- kubernetes


def k8s_objects() -> list[dict[str, Any]]:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    files = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization["resources"]) == files, "kustomization.yaml must list every manifest"
    objects: list[dict[str, Any]] = []
    for name in kustomization["resources"]:
        objects += [doc for doc in yaml.safe_load_all((K8S / name).read_text()) if doc]
    return objects


def by_kind(kind: str) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in k8s_objects() if o["kind"] == kind}


def workloads() -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for kind in ("Deployment", "StatefulSet", "Job"):
        out.update(by_kind(kind))
    return out


def test_kubernetes_workloads() -> None:
    parser = build_parser()
    configmaps = by_kind("ConfigMap")
    expected = {
        "stormwatch-topics": ("Job", "topics"),
        "stormwatch-gateway": ("Deployment", "gateway"),
        "stormwatch-ingest": ("StatefulSet", "ingest"),
        "stormwatch-correlator": ("StatefulSet", "correlate"),
        "stormwatch-linker": ("StatefulSet", "link"),
        "stormwatch-notifier": ("StatefulSet", "notify"),
        "stormwatch-agent": ("Deployment", "agent"),
        "stormwatch-executor": ("Deployment", "executor"),
    }
    found = workloads()
    assert set(found) == set(expected)
    for name, obj in found.items():
        kind, command = expected[name]
        assert obj["kind"] == kind, name
        template = obj["spec"]["template"]
        if kind != "Job":
            assert obj["spec"]["selector"]["matchLabels"].items() <= template["metadata"]["labels"].items()
        pod = template["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        (container,) = pod["containers"]
        assert container["image"] == "stormwatch"
        assert container["securityContext"]["allowPrivilegeEscalation"] is False
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        args = parser.parse_args(container["args"])
        assert container["args"][0] == command and callable(args.handler)
        env = {e["name"]: e for e in container.get("env", [])}
        assert env["STORMWATCH_CONFIG"]["value"].startswith("/etc/stormwatch/config/")
        volumes = {v["name"]: v for v in pod["volumes"]}
        for mount in container["volumeMounts"]:
            volume = volumes[mount["name"]]
            if "configMap" in volume:
                assert volume["configMap"]["name"] in configmaps
        for item in env.values():
            ref = item.get("valueFrom", {}).get("secretKeyRef")
            if ref is not None:
                assert not ref.get("optional"), "the gateway refuses 0.0.0.0 without its token"
        if kind == "StatefulSet" or name == "stormwatch-executor":
            # Stable instance ids from the pod name: a restarted replica fences its predecessor.
            assert env["STORMWATCH_INSTANCE_ID"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
        if kind == "StatefulSet":
            service = by_kind("Service")[obj["spec"]["serviceName"]]
            assert service["spec"]["clusterIP"] == "None"
        process = name.removeprefix("stormwatch-")
        if process in METRICS_PORTS:
            port = METRICS_PORTS[process]
            annotations = template["metadata"]["annotations"]
            assert annotations["prometheus.io/scrape"] == "true"
            assert annotations["prometheus.io/port"] == str(port)
            assert [p["containerPort"] for p in container["ports"]] == [port]
            if process != "gateway":
                assert args.metrics_port == port
    assert found["stormwatch-agent"]["spec"]["replicas"] == 1
    assert found["stormwatch-agent"]["spec"]["strategy"]["type"] == "Recreate"
    gateway = by_kind("Service")["stormwatch-gateway"]
    assert gateway["spec"]["ports"][0]["port"] == 9095


def test_kubernetes_configmaps_match_the_deploy_files() -> None:
    configmaps = by_kind("ConfigMap")
    config = yaml.safe_load(configmaps["stormwatch-config"]["data"]["stormwatch.yaml"])
    settings = Settings.model_validate(config)
    assert settings.correlator.rules_file == "/etc/stormwatch/rules/correlation_rules.yaml"
    assert settings.agent.workflows_file == "/etc/stormwatch/workflows/incident_workflow_config.yaml"
    assert settings.correlator.topology_file == "/etc/stormwatch/topology/topology.yaml"
    # the correlator and the linker mount the topology where the config says
    found = workloads()
    for name in ("stormwatch-correlator", "stormwatch-linker"):
        pod = found[name]["spec"]["template"]["spec"]
        volumes = {v["name"]: v for v in pod["volumes"]}
        (container,) = pod["containers"]
        mounts = {
            m["mountPath"]: volumes[m["name"]].get("configMap", {}).get("name")
            for m in container["volumeMounts"]
        }
        assert mounts["/etc/stormwatch/topology"] == "stormwatch-topology", name
    # the notifier mounts its file where the config says, and its receivers' Secret
    assert settings.notify.notify_file == "/etc/stormwatch/notify/notify.yaml"
    pod = found["stormwatch-notifier"]["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    (container,) = pod["containers"]
    mounts = {m["mountPath"]: volumes[m["name"]] for m in container["volumeMounts"]}
    assert mounts["/etc/stormwatch/notify"]["configMap"]["name"] == "stormwatch-notify"
    assert mounts["/etc/stormwatch/notify-secrets"]["secret"]["secretName"] == "stormwatch-notify"
    env = {e["name"]: e for e in container["env"]}
    assert env[NOTIFY_URL_ENV]["valueFrom"]["secretKeyRef"] == {
        "name": "stormwatch-notify",
        "key": "webhook-url",
    }
    for configmap, key, source in (
        ("stormwatch-rules", "correlation_rules.yaml", "deploy/correlation_rules.yaml"),
        ("stormwatch-topology", "topology.yaml", "deploy/topology.yaml"),
        ("stormwatch-notify", "notify.yaml", "deploy/notify.yaml"),
        ("stormwatch-workflows", "incident_workflow_config.yaml", "deploy/incident_workflow_config.yaml"),
    ):
        embedded = yaml.safe_load(configmaps[configmap]["data"][key])
        assert embedded == yaml.safe_load((ROOT / source).read_text()), (
            f"ConfigMap {configmap} differs from {source}: copy the file into deploy/kubernetes/configmaps.yaml"
        )


def test_kubectl_kustomize_builds() -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed")
    result = run([kubectl, "kustomize", str(K8S)])
    assert result.returncode == 0, result.stderr
    docs = [d for d in yaml.safe_load_all(result.stdout) if d]
    assert all(d["metadata"].get("namespace") == "stormwatch" for d in docs if d["kind"] != "Namespace")
    images = {
        c["image"]
        for d in docs
        if d["kind"] in {"Deployment", "StatefulSet", "Job"}
        for c in d["spec"]["template"]["spec"]["containers"]
    }
    assert images == {"stormwatch:0.1.0"}


def test_rules_and_dashboard_agree_on_job_names() -> None:
    exprs = " ".join(t["expr"] for p in panels(dashboard()) for t in p.get("targets", []))
    assert set(re.findall(r'job=~?"([^"]+)"', exprs)) <= {"stormwatch-.+"} | STORMWATCH_JOBS


# ------------------------------------------------------------------------------------- the notifier file


def test_the_shipped_notifier_file_loads_and_reads_its_webhook_url_from_the_environment() -> None:
    """deploy/notify.yaml is what make up, compose and Kubernetes run: it must load as the stage
    loads it, and its webhook URL must come from the variable all three set."""
    from stormwatch.commands.notify import load_notifier_file

    config = load_notifier_file(str(NOTIFY_FILE))
    assert config.receivers, "at least one receiver"
    doc = yaml.safe_load(NOTIFY_FILE.read_text())
    urls = [w for r in doc["receivers"] for w in r.get("webhook_configs", [])]
    assert urls and all(w.get("url_env") == NOTIFY_URL_ENV for w in urls)
    stack = (ROOT / "deploy" / "local-stack.sh").read_text()
    assert f"export {NOTIFY_URL_ENV}=" in stack
    assert "notify_file: $NOTIFY_FILE" in stack and "NOTIFY_FILE=deploy/notify.yaml" in stack
