#!/usr/bin/env bash
# Start what the docker runner (and the `docker` tests) need on a fresh Debian 12 machine (root; idempotent):
#   Debian's docker.io engine (dockerd in the background), Debian's docker-registry on 127.0.0.1:5000,
#   and the base image 127.0.0.1:5000/bundler/debian-python:3.11 (debootstrapped bookworm with python3
#   3.11, python3-venv, python3-pip), pushed reproducibly to that registry.
# Called by .ci/setup (the main job runs in the container); safe to call again: every step checks
# whether its work is already done.
set -euo pipefail

IMAGE="127.0.0.1:5000/bundler/debian-python:3.11"
STATE=/var/lib/bundler-ci
SOCK=/var/run/docker.sock
mkdir -p "$STATE"

log() { printf 'setup-docker: %s\n' "$*" >&2; }

wait_for() {  # wait_for SECONDS DESCRIPTION COMMAND...
    local limit=$1 what=$2; shift 2
    for _ in $(seq 1 "$limit"); do
        if "$@" >/dev/null 2>&1; then return 0; fi
        sleep 1
    done
    log "$what did not come up within ${limit}s"; return 1
}

# 1. Packages (Debian's own; nothing from Docker Inc.).
missing=()
for pkg in docker.io docker-registry debootstrap curl; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
    log "installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# 2. dockerd in the background (no systemd here), waited for on its socket.
if ! curl -sf --unix-socket "$SOCK" http://localhost/_ping >/dev/null 2>&1; then
    log "starting dockerd"
    driver=overlay2
    # overlay2 cannot stack on an overlay root (a container); vfs is slow but works everywhere.
    if [ "$(stat -f -c %T /var/lib)" = "overlayfs" ]; then driver=vfs; fi
    nohup dockerd --storage-driver="$driver" >/var/log/dockerd.log 2>&1 &
    echo $! >"$STATE/dockerd.pid"
    wait_for 60 dockerd curl -sf --unix-socket "$SOCK" http://localhost/_ping || {
        tail -20 /var/log/dockerd.log >&2; exit 1; }
fi

# 3. The registry on 127.0.0.1:5000 only (Debian's config listens on every interface).
if ! curl -sf http://127.0.0.1:5000/v2/ >/dev/null 2>&1; then
    log "starting docker-registry on 127.0.0.1:5000"
    mkdir -p /var/lib/docker-registry
    cat >"$STATE/registry.yml" <<'EOF'
version: 0.1
storage:
  filesystem:
    rootdirectory: /var/lib/docker-registry
  delete:
    enabled: true
http:
  addr: 127.0.0.1:5000
EOF
    nohup docker-registry serve "$STATE/registry.yml" >/var/log/docker-registry.log 2>&1 &
    echo $! >"$STATE/registry.pid"
    wait_for 30 docker-registry curl -sf http://127.0.0.1:5000/v2/ || {
        tail -20 /var/log/docker-registry.log >&2; exit 1; }
fi

# 4. The base image, debootstrapped from the machine's Debian mirror and pushed reproducibly: its digest
#    depends only on the Debian packages (bookworm main, which moves at point releases), never on the
#    machine, the mirror or the day (bundler/recipe/base_image.py says how).
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
if ! digest=$(python3 -m bundler.recipe.base_image check "$IMAGE"); then
    mirror=$(grep -hoE '^(URIs:|deb) +https?://[^ ]+/debian/?( |$)' \
                 /etc/apt/sources.list /etc/apt/sources.list.d/*.sources 2>/dev/null \
             | head -1 | awk '{print $2}' || true)
    mirror=${mirror:-http://deb.debian.org/debian}
    rootfs="$STATE/rootfs"
    log "debootstrapping bookworm (python3, python3-venv, python3-pip) from $mirror"
    rm -rf "$rootfs"
    debootstrap --variant=minbase --include=python3,python3-venv,python3-pip \
        bookworm "$rootfs" "$mirror" >"$STATE/debootstrap.log" 2>&1 || {
        tail -20 "$STATE/debootstrap.log" >&2; exit 1; }
    log "pushing $IMAGE (normalised rootfs, fixed mtimes and created time)"
    digest=$(python3 -m bundler.recipe.base_image build "$rootfs" "$IMAGE")
    rm -rf "$rootfs"
fi
# A committed image.lock.json pins the digest made where it was locked; say so when this machine's differs.
for lock in examples/*/image.lock.json; do
    [ -f "$lock" ] || continue
    if grep -q "\"reference\": \"$IMAGE\"" "$lock" && ! grep -q "\"digest\": \"$digest\"" "$lock"; then
        log "warning: $lock pins another digest than this machine's $IMAGE@$digest"
        log "  Debian's packages moved since it was locked: run \`bundler lock $(dirname "$lock")\` and commit it (the bundle ID changes with it)"
    fi
done
log "ready: engine on $SOCK, registry on 127.0.0.1:5000, image $IMAGE@$digest"
