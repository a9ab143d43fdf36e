"""`stormwatch ingest`, `stormwatch correlate` and `stormwatch link`: the pipeline's workers."""

from __future__ import annotations

import argparse
import logging
import os
import socket
from typing import Any

from stormwatch.commands.args import worker_options
from stormwatch.config import Settings
from stormwatch.errors import UserError
from stormwatch.kafka.client import require_topic
from stormwatch.kafka.txloop import Stage, TransactionalLoop
from stormwatch.loaders import load_rules, load_topology
from stormwatch.metrics import PipelineMetrics, pipeline_metrics, serve_metrics
from stormwatch.streams.core.linkgate import LinkSetup
from stormwatch.streams.core.rules import RulesConfig, RulesError
from stormwatch.streams.core.topology import Topology, TopologyConfig, TopologyError
from stormwatch.streams.correlator import CorrelatorStage
from stormwatch.streams.ingest import IngestStage
from stormwatch.streams.linker import LinkerStage

log = logging.getLogger("stormwatch.pipeline")


def register(sub: Any) -> None:
    for name, handler, text in (
        ("ingest", run_ingest, "Run the stateless ingest stage (raw alerts -> routed batches, DLQ, ticks)."),
        ("correlate", run_correlate, "Run the stateful correlator (dedup, grouping, incidents, audit log)."),
        (
            "link",
            run_link,
            "Run the linker: related label groups become one incident with a root cause "
            "(needs correlator.topology_file).",
        ),
    ):
        p: argparse.ArgumentParser = sub.add_parser(name, help=text, description=text)
        if name == "link":
            p.add_argument("--topology", help="Topology YAML (default: correlator.topology_file)")
        else:
            p.add_argument(
                "--rules", help="Correlation rules YAML (default: correlator.rules_file or built-in)"
            )
        worker_options(p)
        # the correlator's state moves with its partitions: jemalloc returns what a takeover needed
        p.set_defaults(handler=handler, auto_jemalloc=name == "correlate")


def _rules(args: argparse.Namespace, settings: Settings) -> RulesConfig:
    try:
        return load_rules(args.rules or settings.correlator.rules_file)
    except RulesError as exc:
        raise UserError(str(exc)) from None


def _partitions(settings: Settings, topic: str) -> int:
    return require_topic(settings, topic)


def _instance(args: argparse.Namespace) -> str:
    return str(args.instance_id or f"{socket.gethostname()}-{os.getpid()}")


def run_ingest(args: argparse.Namespace, settings: Settings) -> int:
    rules = _rules(args, settings)
    _metrics(args, settings)
    partitions = _partitions(settings, settings.topics.correlator_input)
    _partitions(settings, settings.topics.raw)
    stage = IngestStage(settings, rules, partitions, pipeline_metrics())
    return _serve(args, "ingest", build_ingest_loop(settings, stage, _instance(args)))


def run_correlate(args: argparse.Namespace, settings: Settings) -> int:
    rules = _rules(args, settings)
    topology = _topology(settings.correlator.topology_file)
    _metrics(args, settings)
    linking = link_setup(settings, topology) if topology is not None else None
    if linking is None:
        _partitions(settings, settings.topics.correlator_input)
    stage = CorrelatorStage(settings, rules, pipeline_metrics(), linking)
    return _serve(args, "correlator", build_correlator_loop(settings, stage, _instance(args)))


def run_link(args: argparse.Namespace, settings: Settings) -> int:
    path = args.topology or settings.correlator.topology_file
    if not path:
        raise UserError(
            "stormwatch link needs a topology: set correlator.topology_file (or "
            "STORMWATCH_CORRELATOR__TOPOLOGY_FILE), or pass --topology FILE; the correlator must "
            "have the same file"
        )
    topology = _topology(path)
    assert topology is not None
    _metrics(args, settings)
    setup = link_setup(settings, topology)
    _partitions(settings, settings.topics.topology)
    stage = LinkerStage(
        settings, topology, setup.correlator_partitions, setup.linker_partitions, pipeline_metrics()
    )
    return _serve(args, "linker", build_linker_loop(settings, stage, _instance(args)))


def _topology(path: str | None) -> TopologyConfig | None:
    if not path:
        return None
    try:
        return load_topology(path)
    except TopologyError as exc:
        raise UserError(str(exc)) from None


def link_setup(settings: Settings, config: TopologyConfig) -> LinkSetup:
    """The correlator and the linker must agree on both partition counts: read from the topics."""
    return LinkSetup(
        Topology(config),
        correlator_partitions=_partitions(settings, settings.topics.correlator_input),
        linker_partitions=_partitions(settings, settings.topics.linker_input),
    )


def _metrics(args: argparse.Namespace, settings: Settings) -> None:
    """/metrics first: a port in use is reported at once, not after the wait for Kafka."""
    serve_metrics(
        args.metrics_port if args.metrics_port is not None else settings.metrics_port, settings.metrics_host
    )


def _serve(args: argparse.Namespace, name: str, loop: TransactionalLoop) -> int:
    loop.serve(name, max_seconds=args.max_seconds, instance=_instance(args))
    return 0


def build_ingest_loop(settings: Settings, stage: IngestStage, instance: str) -> TransactionalLoop:
    t = settings.topics
    return _loop(
        settings,
        stage,
        "ingest",
        [t.raw, t.commands, t.mitigation_results],
        settings.ingest.max_batch_records,
        instance,
        stage.metrics,
    )


def build_correlator_loop(settings: Settings, stage: CorrelatorStage, instance: str) -> TransactionalLoop:
    return _loop(
        settings,
        stage,
        "correlator",
        [settings.topics.correlator_input],
        settings.correlator.max_batch_records,
        instance,
        stage.metrics,
    )


def build_linker_loop(settings: Settings, stage: LinkerStage, instance: str) -> TransactionalLoop:
    return _loop(
        settings,
        stage,
        "linker",
        [settings.topics.linker_input],
        settings.correlator.max_batch_records,
        instance,
        stage.metrics,
    )


def _loop(
    settings: Settings,
    stage: Stage,
    name: str,
    topics: list[str],
    max_batch: int,
    instance: str,
    metrics: PipelineMetrics | None,
) -> TransactionalLoop:
    """Both stages' loops are named after the correlator input topic: one deployment, one name."""
    deployment = settings.topics.correlator_input
    return TransactionalLoop(
        settings,
        stage=stage,
        group_id=f"stormwatch-{name}-{deployment}",
        topics=topics,
        transactional_id=f"stormwatch-{name}-{deployment}-{instance}",
        max_batch=max_batch,
        on_commit=(lambda n, s: _committed(metrics, name, s)) if metrics else None,
    )


def _committed(metrics: Any, stage: str, seconds: float) -> None:
    metrics.transactions.labels(stage=stage).inc()
    metrics.transaction_seconds.labels(stage=stage).observe(seconds)
