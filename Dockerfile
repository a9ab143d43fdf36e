# The stormwatch image: one image for every process (gateway, ingest, correlate, agent, executor,
# and the one-shot commands); the command picks the role, e.g. `docker run IMAGE ingest`.
#
#   docker build -t stormwatch:dev .
#   docker run --rm stormwatch:dev --help
#
# docker-compose.yml builds it; docs/deployment.md covers Kubernetes.

# ---------------------------------------------------------------------------------------- build
FROM python:3.11-slim AS build

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1

# Every dependency ships as a binary wheel (confluent-kafka bundles librdkafka), so no compiler.
RUN python -m venv /opt/stormwatch

WORKDIR /src
# Dependencies first, pinned by constraints.txt: this layer stays cached while only code changes.
COPY pyproject.toml constraints.txt ./
RUN python -c "import tomllib; print('\\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /tmp/requirements.txt
RUN /opt/stormwatch/bin/pip install -c constraints.txt -r /tmp/requirements.txt

COPY schemas schemas
COPY streams streams
COPY agents agents
COPY bench bench
COPY stormwatch stormwatch
RUN /opt/stormwatch/bin/pip install --no-deps -c constraints.txt . \
    && /opt/stormwatch/bin/stormwatch --help >/dev/null

# -------------------------------------------------------------------------------------- runtime
FROM python:3.11-slim

# tini as PID 1: forwards SIGTERM (workers commit their open batch and leave the consumer group)
# and reaps the processes the executor's `exec` action starts. jemalloc: the correlator re-executes
# itself with it, so memory freed after a takeover goes back to the OS (stormwatch/allocator.py).
RUN apt-get update \
    && apt-get install -y --no-install-recommends tini libjemalloc2 \
    && rm -rf /var/lib/apt/lists/*

# A fixed numeric uid, so Kubernetes' runAsNonRoot can verify it without a passwd lookup.
RUN groupadd --system --gid 10001 stormwatch \
    && useradd --system --uid 10001 --gid stormwatch --home-dir /var/lib/stormwatch --create-home \
        --shell /usr/sbin/nologin stormwatch

COPY --from=build /opt/stormwatch /opt/stormwatch
# The examples as defaults; mount your own over /etc/stormwatch (compose, ConfigMaps).
COPY deploy/correlation_rules.yaml deploy/incident_workflow_config.yaml /etc/stormwatch/

ENV PATH=/opt/stormwatch/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    STORMWATCH_CORRELATOR__RULES_FILE=/etc/stormwatch/correlation_rules.yaml \
    STORMWATCH_AGENT__WORKFLOWS_FILE=/etc/stormwatch/incident_workflow_config.yaml

USER 10001:10001
WORKDIR /var/lib/stormwatch

# 9095 gateway; 9096-9099 /metrics of ingest, correlate, agent, executor (docs/observability.md).
EXPOSE 9095 9096 9097 9098 9099

ENTRYPOINT ["/usr/bin/tini", "--", "stormwatch"]
CMD ["--help"]
