# syntax=docker/dockerfile:1
# StreamSafe worker image: `docker build -t streamsafe:0.1.0 .`
#   docker run streamsafe:0.1.0                 # a worker (CMD worker)
#   docker run streamsafe:0.1.0 topics apply    # any other streamsafe command
# Two stages: the builder compiles wheels for StreamSafe and every pinned dependency
# (pdqhash ships no wheel and needs a C++ compiler); the runtime installs those wheels
# into a slim Python with no compiler, no wheel cache and no source tree.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS builder
# build-essential floats with the base image's Debian release: the builder's output (wheels) is what is pinned
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml README.md ./
COPY streamsafe/ streamsafe/
COPY topics/ topics/
COPY deploy/prometheus/alerts.yml deploy/prometheus/alerts.yml
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="StreamSafe" \
      org.opencontainers.image.description="Live-stream child-safety event processor on Kafka" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    STREAMSAFE_STORE=rocksdb:// \
    STREAMSAFE_DATA_DIR=/var/lib/streamsafe \
    STREAMSAFE_LOG_FORMAT=json \
    STREAMSAFE_HTTP_PORT=8466 \
    NUMBA_CACHE_DIR=/var/lib/streamsafe/numba-cache
# Only the builder's wheels, none from an index: the image holds exactly what was built.
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-index --find-links=/wheels /wheels/streamsafe-*.whl \
    && groupadd --system --gid 10001 streamsafe \
    && useradd --system --uid 10001 --gid streamsafe --home-dir /var/lib/streamsafe --shell /usr/sbin/nologin streamsafe \
    && mkdir -p /var/lib/streamsafe \
    && chown streamsafe:streamsafe /var/lib/streamsafe
# RocksDB tables (the "blocked once" memory, incidents): a restart keeps them and replays
# only the changelog's tail. The PDQ kernels' compiled cache lives there too: the package
# directory is read-only (root-owned here, a read-only root filesystem in Kubernetes).
VOLUME ["/var/lib/streamsafe"]
WORKDIR /var/lib/streamsafe
USER 10001:10001
EXPOSE 8466
# /healthz answers while the worker's event loop runs (Kubernetes uses its own probes instead)
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('STREAMSAFE_HTTP_PORT', '8466'), timeout=4)"]
# Python is PID 1 and the worker handles SIGTERM itself (it finishes the records in hand,
# commits and closes): `docker stop` and Kubernetes stop it cleanly.
ENTRYPOINT ["streamsafe"]
CMD ["worker"]
