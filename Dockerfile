# The forkwire server image: `docker build -t forkwire .`, or `docker compose build`.
# Needs BuildKit (Docker's default builder since 23.0) for the RUN --mount below.

ARG PYTHON_IMAGE=python:3.11-slim

# Stage 1: wheels for forkwire and everything it needs with the postgres extra, so the final
# stage installs from them offline and carries no compiler, source tree or pip cache.
FROM ${PYTHON_IMAGE} AS build
WORKDIR /src
COPY . .
RUN pip wheel --no-cache-dir --wheel-dir /wheels ".[postgres]"

# Stage 2: the runtime. Everything is installed here, at build time: a container start
# installs nothing.
FROM ${PYTHON_IMAGE}
# The version is the one wheel built above; --no-index takes nothing else.
# hadolint ignore=DL3013
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-index --find-links /wheels "forkwire[postgres]" \
    && groupadd --system --gid 10001 forkwire \
    && useradd --system --uid 10001 --gid forkwire --create-home \
        --home-dir /var/lib/forkwire --shell /usr/sbin/nologin forkwire
COPY deploy/healthcheck.py /usr/local/lib/forkwire/healthcheck.py

# By number, so a runtime that insists on a non-root user (runAsNonRoot) can tell.
USER 10001:10001
# The home folder is the working directory, so the default SQLite store
# (sqlite:///forkwire.sqlite) is writable by the non-root user; mount a volume there to
# keep it, or point FORKWIRE_DB at PostgreSQL (docker-compose.yml does).
WORKDIR /var/lib/forkwire
ENV FORKWIRE_HOST=0.0.0.0 \
    FORKWIRE_PORT=7700 \
    FORKWIRE_LOG_FORMAT=json \
    PYTHONUNBUFFERED=1
EXPOSE 7700/tcp 7700/udp

# Healthy once the server answers a hello with a welcome on FORKWIRE_PORT (set the port
# through FORKWIRE_PORT, not --port, or the check looks in the wrong place).
HEALTHCHECK --interval=10s --timeout=5s --start-period=10s --retries=3 \
    CMD ["python", "/usr/local/lib/forkwire/healthcheck.py"]

# SIGTERM (docker stop) lets running jobs answer for up to FORKWIRE_GRACE seconds (10 by
# default): give `docker stop -t` / stop_grace_period more than that.
ENTRYPOINT ["forkwire-server"]
