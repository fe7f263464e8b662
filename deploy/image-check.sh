#!/usr/bin/env bash
# `make image-check`: build the image with buildah and smoke-test it with podman,
# with no registry at all: the base is a local Debian rootfs (debootstrap) with
# Python, handed to the Dockerfile as BASE. Not part of CI: an image build depends
# on mirrors and kernels a landing should not wait for.
#
# Needs (Debian): buildah podman runc debootstrap. DEBIAN_MIRROR picks the mirror
# debootstrap uses (its default otherwise).
set -euo pipefail
cd "$(dirname "$0")/.."

for tool in buildah podman debootstrap; do
  command -v "$tool" >/dev/null || { echo "image-check: $tool is missing (apt-get install buildah podman runc debootstrap)" >&2; exit 2; }
done

base=localhost/webhook-relay-base:bookworm
image=localhost/webhook-relay:check
name=webhook-relay-check-$$
work=$(mktemp -d)
trap 'podman rm -f "$name" >/dev/null 2>&1 || true; rm -rf "$work"' EXIT

if ! podman image exists "$base"; then
  echo "== a local base image (debootstrap bookworm with python3)"
  debootstrap --variant=minbase --include=python3,python3-venv,python-is-python3,passwd,ca-certificates \
    bookworm "$work/rootfs" ${DEBIAN_MIRROR:+"$DEBIAN_MIRROR"} >/dev/null
  # The host's CA bundle, so pip in the build trusts what this machine trusts (a
  # proxy in between included); pip reads it through PIP_CERT.
  cp /etc/ssl/certs/ca-certificates.crt "$work/rootfs/etc/ssl/certs/ca-certificates.crt"
  tar -C "$work/rootfs" -c . \
    | podman import --change 'ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt' - "$base" >/dev/null
fi

echo "== build (buildah, docker format: OCI drops HEALTHCHECK)"
started=$(date +%s)
buildah bud --quiet --format docker --build-arg BASE="$base" -t "$image" . >/dev/null
echo "   built in $(( $(date +%s) - started ))s"

echo "== smoke test (podman)"
cat > "$work/config.yaml" <<'YAML'
listen: "0.0.0.0:8080"
admin: {listen: "127.0.0.1:9090"}
storage: {url: "sqlite:////var/lib/webhook-relay/relay.db"}
drain_delay: 1s
routes:
  - {name: orders, path: /webhooks/orders, upstream: "http://127.0.0.1:9/orders"}
YAML
chmod 0644 "$work/config.yaml"
port=${IMAGE_CHECK_PORT:-18080}
# Limits below the host's: podman's defaults raise them, which a sandboxed host refuses.
podman run -d --ulimit nofile=4096:4096 --ulimit nproc=4096:4096 --name "$name" -p "127.0.0.1:$port:8080" \
  -v "$work/config.yaml:/etc/webhook-relay/config.yaml:ro" "$image" >/dev/null
for _ in $(seq 1 100); do
  podman exec "$name" webhook-relay healthcheck >/dev/null 2>&1 && break
  sleep 0.2
done
podman exec "$name" webhook-relay healthcheck
uid=$(podman exec "$name" id -u)
[ "$uid" = 10001 ] || { echo "runs as uid $uid, not 10001" >&2; exit 1; }
podman exec "$name" python -c "import asyncpg, opentelemetry.sdk"   # the extras are in
status=$(curl -s -o /dev/null -w '%{http_code}' -X POST "http://127.0.0.1:$port/webhooks/orders" \
  -H 'Idempotency-Key: image-check' -d '{}')
[ "$status" = 202 ] || { echo "a webhook got $status" >&2; exit 1; }
podman stop -t 40 "$name" >/dev/null
code=$(podman inspect -f '{{.State.ExitCode}}' "$name")
[ "$code" = 0 ] || { echo "SIGTERM exit code $code" >&2; exit 1; }
echo "image-check: ok (healthy, uid 10001, extras in, 202, SIGTERM exit 0)"
