# syntax=docker/dockerfile:1
# The Tandem cloud service. Two stages: the builder turns the project and every
# dependency of tandem[cloud] into wheels; the runtime installs only those wheels, so
# the final image has no compilers, no build tools and no source tree.
#
#   docker build -t tandem-cloud .
#   docker run -e TANDEM_ADMIN_TOKEN=... -p 8000:8000 tandem-cloud
#
# deploy/README.md describes the two-replica topology in docker-compose.yml.

ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS builder

ENV PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
COPY . .
# The pip cache mount keeps downloaded dependencies between builds, so a source change
# rebuilds only the tandem wheel instead of downloading everything again.
RUN --mount=type=cache,target=/root/.cache/pip \
    pip wheel --wheel-dir /wheels ".[cloud]"


FROM ${PYTHON_IMAGE} AS runtime

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1

# Bind-mounting the wheels (rather than COPYing them) keeps them out of the image layers.
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    pip install --no-index --find-links=/wheels "tandem[cloud]"

# A fixed numeric uid lets orchestrators verify runAsNonRoot and lets operators chown
# a host directory or shared filesystem to match.
RUN groupadd --system --gid 10001 tandem \
    && useradd --system --uid 10001 --gid tandem --create-home --home-dir /home/tandem \
        --shell /usr/sbin/nologin tandem \
    && mkdir -p /data \
    && chown tandem:tandem /data

# Production by default: the service then refuses to start with a placeholder
# TANDEM_ADMIN_TOKEN. Pass TANDEM_ENV=development for a throwaway local run.
ENV TANDEM_ENV=production \
    TANDEM_DATA_DIR=/data

# Blobs and signing keys. Every replica must mount the same volume here.
VOLUME ["/data"]

USER 10001:10001
WORKDIR /home/tandem
EXPOSE 8000

# python:3.11-slim has no curl; urlopen raises (exit 1) on a refused connection or a
# non-2xx answer. Liveness only: /readyz would mark every replica unhealthy while the
# database is down, and restarting them would not help.
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)"]

CMD ["tandem", "serve", "--host", "0.0.0.0", "--port", "8000"]
