# webhook-relay as a container.
#
#   docker build -t webhook-relay .
#   docker run -d --name webhook-relay --stop-timeout 40 \
#     -p 8080:8080 -v webhook-relay-state:/var/lib/webhook-relay \
#     -v "$PWD/config.yaml:/etc/webhook-relay/config.yaml:ro" \
#     -e STRIPE_WEBHOOK_SECRET webhook-relay
#
# The mounted config should say `listen: "0.0.0.0:8080"` and
# `storage: {url: "sqlite:////var/lib/webhook-relay/relay.db"}` (the volume).
# The admin listener stays on 127.0.0.1:9090 unless you publish it, and then
# it needs admin.token_env. SIGTERM fails readyz and serves on for drain_delay
# (5s by default), then drains for shutdown_grace (25s): give `docker stop` /
# compose's stop_grace_period more than both (40s above).
#
# No `# syntax=` line: BuildKit would fetch a frontend from Docker Hub for it, and
# an offline or mirrored build would fail there. The base image is a build
# argument for the same reason (--build-arg BASE=registry.example/python:3.12-slim).
# Dependencies come pinned, with their hashes, from requirements.lock (`make lock`),
# with the postgres and otel extras: one image for SQLite and for replicas.
# buildah/podman users: `buildah bud --format docker` (OCI images drop HEALTHCHECK).
# A bind-mounted state directory must be writable by uid 10001.

ARG BASE=python:3.12-slim

FROM ${BASE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
RUN python -m venv /opt/webhook-relay
COPY requirements.lock ./
RUN /opt/webhook-relay/bin/pip install --no-cache-dir --require-hashes -r requirements.lock
COPY pyproject.toml README.md LICENSE ./
COPY relay ./relay
RUN /opt/webhook-relay/bin/pip install --no-cache-dir --no-deps .

FROM ${BASE}
ENV PATH=/opt/webhook-relay/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    WEBHOOK_RELAY_CONFIG=/etc/webhook-relay/config.yaml
RUN groupadd --system --gid 10001 relay \
    && useradd --system --uid 10001 --gid relay --no-create-home \
        --home-dir /var/lib/webhook-relay --shell /usr/sbin/nologin relay \
    && mkdir -p /var/lib/webhook-relay /etc/webhook-relay \
    && chown relay:relay /var/lib/webhook-relay \
    && chmod 0750 /var/lib/webhook-relay
COPY --from=build /opt/webhook-relay /opt/webhook-relay
WORKDIR /var/lib/webhook-relay
# Events, deliveries and dedupe keys live here: keep it on a volume.
VOLUME ["/var/lib/webhook-relay"]
USER 10001:10001
EXPOSE 8080 9090
STOPSIGNAL SIGTERM
# Asks the admin listener's /readyz (address from the config); exit 0 when ready.
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["webhook-relay", "healthcheck"]
ENTRYPOINT ["webhook-relay"]
CMD ["serve", "-c", "/etc/webhook-relay/config.yaml"]
