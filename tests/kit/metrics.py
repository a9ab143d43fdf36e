"""Read a Prometheus /metrics endpoint (a worker's, the gateway's) the way Prometheus would."""

from __future__ import annotations

import urllib.request

from prometheus_client.parser import text_string_to_metric_families


def metric_value(url: str, name: str, **labels: str) -> float:
    """Sum of the samples called ``name`` whose labels include ``labels``, from the /metrics at
    ``url``; 0 when there are none. OSError when nothing answers."""
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and labels.items() <= sample.labels.items():
                total += sample.value
    return total


def metric(port: int, name: str, **labels: str) -> float:
    """``metric_value`` of a worker's /metrics on loopback ``port``; -1 while the worker does not
    serve /metrics yet (it starts serving after its start-up checks), so polls can tell "not yet"
    from a counter at 0."""
    try:
        return metric_value(f"http://127.0.0.1:{port}/metrics", name, **labels)
    except OSError:
        return -1.0
