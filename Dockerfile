# syntax=docker/dockerfile:1
#
# pgsessions image: a wheel built in the first stage, installed into a slim Python 3.11 runtime that
# runs as a non-root user. Config is mounted (default /config/pgsessions.yml), secrets come from the
# environment, state defaults to /var/lib/pgsessions (mount a volume there, or use state: postgresql://).
#
#   docker build -t pgsessions .
#   docker run --rm -v "$PWD/pgsessions.yml:/config/pgsessions.yml:ro" -e SLACK_BOT_TOKEN -e SLACK_APP_TOKEN \
#     pgsessions                                  # Socket Mode (see docs/operating.md for HTTP mode)
#   docker run --rm ... pgsessions pgsessions check   # the readiness check, same image

ARG PYTHON_VERSION=3.11

# --- build: the pgsessions wheel and every dependency as wheels --------------------------------------
FROM python:${PYTHON_VERSION}-slim-bookworm AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# a compiler only for the odd dependency without a wheel for this platform; it stays in this stage
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /src
COPY pyproject.toml README.md ./
COPY bot ./bot
RUN python -m pip wheel --wheel-dir /wheels .

# --- runtime -----------------------------------------------------------------------------------------
FROM python:${PYTHON_VERSION}-slim-bookworm AS runtime

LABEL org.opencontainers.image.title="pgsessions" \
      org.opencontainers.image.description="Slack chat-ops for PostgreSQL sessions: list, cancel and terminate with two-person approval, watch standby replay lag" \
      org.opencontainers.image.licenses="MIT"

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PGSESSIONS_CONFIG=/config/pgsessions.yml \
    HOST=0.0.0.0 \
    PORT=3000 \
    LOG_FORMAT=json \
    LOG_LEVEL=INFO

RUN groupadd --system --gid 10001 pgsessions \
 && useradd --system --uid 10001 --gid pgsessions --home-dir /var/lib/pgsessions --create-home \
            --shell /usr/sbin/nologin pgsessions \
 && mkdir -p /config \
 && chown pgsessions:pgsessions /var/lib/pgsessions

# install from the build stage's wheels only (no network, no compiler); the wheels never land in a layer
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    python -m pip install --no-index --find-links=/wheels pgsessions \
 && pgsessions --help > /dev/null

USER 10001:10001
# the default SQLite state (state: sqlite:///pgsessions-state.db) is relative to here
WORKDIR /var/lib/pgsessions

EXPOSE 3000

# /healthz answers 200 once the bot is ready (in Socket Mode too); no curl in the image, Python is there
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('PORT', '3000') + '/healthz', timeout=4)"]

# serve handles SIGTERM: it stops taking requests, closes the Slack connection and the pools, exits 0
STOPSIGNAL SIGTERM
CMD ["pgsessions", "serve"]
