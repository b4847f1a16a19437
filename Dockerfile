# syntax=docker/dockerfile:1
# The stream worker's image: nodemeter with the `worker` extra, every dependency baked in
# (nothing is installed when a container starts). docker-compose.yml builds it; alone:
#   docker build -t nodemeter-worker .
#   docker run --rm -e NODEMETER_KAFKA_BOOTSTRAP=HOST:PORT \
#     -e NODEMETER_CLICKHOUSE_URL=http://default@HOST:8123 nodemeter-worker
# tests/integration/test_docker_compose.py parses this file with BuildKit's parser and
# runs its `python -m pip` steps in a venv (see docs/docker.md for what that covers).

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# Stage 1: wheels for nodemeter and everything its `worker` extra needs.
FROM ${PYTHON_IMAGE} AS wheels
WORKDIR /src
COPY pyproject.toml README.md ./
COPY producers/nodemeter producers/nodemeter
COPY stream_jobs stream_jobs
COPY schemas schemas
COPY sql sql
RUN python -m pip wheel --no-cache-dir --disable-pip-version-check --wheel-dir /wheels "/src[worker]"

# Stage 2: the runtime, installed offline from those wheels only.
FROM ${PYTHON_IMAGE}
RUN --mount=type=bind,from=wheels,source=/wheels,target=/wheels \
    python -m pip install --no-cache-dir --disable-pip-version-check --root-user-action=ignore \
      --no-index --find-links /wheels "nodemeter[worker]"
# A non-root user whose home is the data volume: Faust's directory (and an embedded
# chDB store, if NODEMETER_CLICKHOUSE_URL is not a server) live there, never in /app.
RUN useradd --system --uid 10001 --user-group --create-home --home-dir /var/lib/nodemeter nodemeter
ENV PYTHONUNBUFFERED=1 \
    NODEMETER_WORKER_DATA_DIR=/var/lib/nodemeter/faust \
    NODEMETER_CLICKHOUSE_URL=chdb:///var/lib/nodemeter/chdb \
    NODEMETER_WORKER_METRICS_PORT=9108
USER nodemeter
WORKDIR /var/lib/nodemeter
VOLUME ["/var/lib/nodemeter"]
# Prometheus /metrics (nodemeter_* series, see docs/worker.md "Operations")
EXPOSE 9108
# Healthy = the worker process serves /metrics (it starts before Faust joins the group).
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/metrics' % os.environ['NODEMETER_WORKER_METRICS_PORT'], timeout=4)"]
ENTRYPOINT ["nodemeter"]
CMD ["worker", "--metrics-host", "0.0.0.0"]
