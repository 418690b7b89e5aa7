# syntax=docker/dockerfile:1
# formrelay's container image. Build: `docker build -t formrelay .` (podman: `podman build --format docker -t
# formrelay .`, so that HEALTHCHECK is kept). Run: docs/deploy/container.md. No secret and no config is baked in.
ARG PYTHON_IMAGE=docker.io/library/python:3.12-slim-bookworm

# Stage 1: formrelay's wheel and the wheels of what it needs. Package index settings (a mirror) are build args of
# this stage only: nothing of this stage but the wheels reaches the image.
FROM ${PYTHON_IMAGE} AS build
ARG PIP_INDEX_URL=""
ARG PIP_EXTRA_INDEX_URL=""
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY static ./static
COPY formrelay ./formrelay
RUN python3 -m pip wheel --wheel-dir /wheels /src

# Stage 2: the wheels installed into a virtual environment (no pip in it), from the wheels only (--no-index).
FROM ${PYTHON_IMAGE} AS install
COPY --from=build /wheels /wheels
RUN python3 -m venv --without-pip /opt/formrelay \
    && PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore python3 -m pip --python /opt/formrelay/bin/python \
        install --no-index --no-cache-dir --find-links /wheels formrelay \
    && /opt/formrelay/bin/formrelay --version

# The image: the same base, the environment copied over (no wheels, no build tools), a user without privileges.
FROM ${PYTHON_IMAGE}
ARG FORMRELAY_VERSION=0.1.0
ARG REVISION=""
LABEL org.opencontainers.image.title="formrelay" \
      org.opencontainers.image.description="Embeddable form-submission backend: validates supporters' submissions and relays them to NGP VAN, Engaging Networks, Action Network and EngageOne, queueing what cannot be delivered now." \
      org.opencontainers.image.version="${FORMRELAY_VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="MIT"
RUN groupadd --system --gid 10001 formrelay \
    && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/formrelay --no-create-home \
        --shell /usr/sbin/nologin formrelay \
    && install -d -o 10001 -g 10001 -m 0750 /var/lib/formrelay \
    && install -d -m 0755 /etc/formrelay
COPY --from=install /opt/formrelay /opt/formrelay
# FORMRELAY_CONFIG: mount the config there, read-only (it may name secrets as ${VARS}: pass those as environment).
# FORMRELAY_QUEUE_PATH: the SQLite queue on the volume, whatever directory the config is mounted in (a
# [queue] path in the config wins). FORMRELAY_HOST/PORT: where serve listens and where healthcheck asks.
ENV PATH=/opt/formrelay/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    FORMRELAY_CONFIG=/etc/formrelay/formrelay.toml \
    FORMRELAY_QUEUE_PATH=/var/lib/formrelay/queue.sqlite3 \
    FORMRELAY_HOST=0.0.0.0 \
    FORMRELAY_PORT=8000
VOLUME ["/var/lib/formrelay"]
WORKDIR /var/lib/formrelay
USER 10001:10001
EXPOSE 8000
# SIGTERM: granian stops accepting, finishes requests (workers killed after 30 s), the queue threads hand their
# leases back. Give the container at least 40 s to stop (docker/podman run --stop-timeout 40, compose
# stop_grace_period: 40s); the default 10 s ends in a SIGKILL that leaves leases to expire (120 s).
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 CMD ["formrelay", "healthcheck"]
CMD ["formrelay", "serve"]
