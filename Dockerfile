# syntax=docker/dockerfile:1.7
# The worker-facing API: `docker build -t workerfacing-api .`, then
# `docker run -p 8001:8001 -e QUEUE_DB_URL=postgresql://… workerfacing-api` (see README for the
# variables, docs/OPERATIONS.md for running it). With no configuration it runs the embedded
# development default under /data. `nox -s docker_build docker_serve` does both.

FROM python:3.11-slim AS build
COPY --from=ghcr.io/astral-sh/uv:0.13 /uv /bin/uv
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/app/.venv
WORKDIR /src
# Dependencies first, so that code changes do not invalidate this layer.
COPY pyproject.toml uv.lock README.md ./
RUN uv sync --locked --no-dev --no-install-project
COPY src ./src
RUN uv sync --locked --no-dev --no-editable

FROM python:3.11-slim
RUN useradd --create-home --uid 10001 app \
    && mkdir /data && chown app /data
COPY --from=build /app/.venv /app/.venv
# LOG_FORMAT=json: one JSON object per line, for the log collector. WEB_CONCURRENCY: processes
# `serve` runs on its port (it reads the variable itself); one per container is what production
# wants, so that each container's /metrics is one process's.
ENV PATH=/app/.venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    HOST=0.0.0.0 \
    PORT=8001 \
    LOG_FORMAT=json \
    WEB_CONCURRENCY=1
WORKDIR /data
USER 10001
EXPOSE 8001
# Ready means the database answers and its schema is current; any other answer, or none within
# 3 s, exits 1. It asks the port directly, never through an HTTP_PROXY set for the upstream.
# (ECS does not run an image's HEALTHCHECK: give the same command in the task definition, see
# docs/OPERATIONS.md.)
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, sys, urllib.request as u; r = u.build_opener(u.ProxyHandler({})).open('http://127.0.0.1:%s/health/ready' % os.environ.get('PORT', '8001'), timeout=3); sys.exit(0 if r.status == 200 else 1)"]
# On SIGTERM `serve` stops accepting, gives requests in flight SHUTDOWN_GRACE seconds (default
# 20), hands back what it leased and exits 0: allow it that long (`docker stop --time 40`, ECS
# stopTimeout), or SIGKILL cuts it short after Docker's default of 10 s.
STOPSIGNAL SIGTERM
ENTRYPOINT ["workerfacing-api"]
CMD ["serve"]
