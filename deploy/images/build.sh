#!/usr/bin/env bash
# Builds the local stand-ins for the registry images the production stack
# names (node, postgres, redis, rabbitmq, nginx), without a registry:
#   localhost/messenger-local/debian:bookworm   debootstrap (minbase) + podman import
#   localhost/messenger-local/<name>:latest      <name>.Containerfile on that base
# Debian's packages come from its apt mirror; Node.js and npm are this
# machine's own. Each image carries a label with the hash of its inputs and is
# rebuilt only when they change, so a second run takes seconds.
# Needs root, podman, runc and debootstrap. Settings: DEBIAN_MIRROR, PODMAN.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
export CONTAINERS_CONF=${CONTAINERS_CONF:-$here/containers.conf}
read -r -a PODMAN <<< "${PODMAN:-podman --runtime runc --cgroup-manager=cgroupfs}"
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
BASE=localhost/messenger-local/debian:bookworm
say() { printf 'images: %s\n' "$*" >&2; }

label_of() { "${PODMAN[@]}" image inspect --format '{{index .Labels "messenger.local.inputs"}}' "$1" 2>/dev/null || true; }

if ! "${PODMAN[@]}" image exists "$BASE"; then
  say "debootstrap bookworm (minbase) from $MIRROR"
  root=$(mktemp -d /var/tmp/messenger-rootfs.XXXXXX)
  trap 'rm -rf "$root"' EXIT
  debootstrap --variant=minbase bookworm "$root" "$MIRROR" > "$root.log" 2>&1 \
    || { tail -20 "$root.log" >&2; rm -f "$root.log"; exit 1; }
  rm -f "$root.log"
  cat > "$root/etc/apt/sources.list" <<EOF
deb $MIRROR bookworm main
deb $MIRROR bookworm-updates main
deb ${MIRROR%/debian}/debian-security bookworm-security main
EOF
  # Smaller layers and no docs, as the slim images do.
  printf 'path-exclude /usr/share/doc/*\npath-exclude /usr/share/man/*\npath-exclude /usr/share/locale/*\n' \
    > "$root/etc/dpkg/dpkg.cfg.d/01-slim"
  chroot "$root" apt-get clean
  rm -rf "$root"/var/lib/apt/lists/* "$root"/usr/share/doc/* "$root"/usr/share/man/*
  say "importing the root file system as $BASE"
  tar -C "$root" -c . | "${PODMAN[@]}" import --quiet --change 'CMD ["/bin/bash"]' - "$BASE" >/dev/null
  rm -rf "$root"
  trap - EXIT
fi

build() { # name, extra files for the context
  local name=$1 image=localhost/messenger-local/$1:latest ctx sum
  shift
  sum=$( { cat "$here/$name.Containerfile"; for f in "$@"; do
             if [ -d "$f" ]; then (cd "$f" && find . -type f -print0 | sort -z | xargs -0 sha256sum); else sha256sum < "$f"; fi
           done; "${PODMAN[@]}" image inspect --format '{{.Id}}' "$BASE"; } | sha256sum | cut -c1-16)
  if [ "$(label_of "$image")" = "$sum" ]; then
    return 0
  fi
  say "building $image"
  ctx=$(mktemp -d /var/tmp/messenger-ctx.XXXXXX)
  cp "$here/$name.Containerfile" "$ctx/Containerfile"
  local f
  for f in "$@"; do cp -a "$f" "$ctx/"; done
  # The build runs apt-get against Debian's mirror, as this machine would.
  if ! "${PODMAN[@]}" build --quiet --network host --format docker \
      --label "messenger.local.inputs=$sum" -t "$image" "$ctx" >/dev/null; then
    rm -rf "$ctx"; say "building $image failed"; return 1
  fi
  rm -rf "$ctx"
}

node_bin=$(readlink -f "$(command -v node)")
npm_dir=$(readlink -f "$(dirname "$(readlink -f "$(command -v npm)")")/..")
stage=$(mktemp -d /var/tmp/messenger-node.XXXXXX)
cp "$node_bin" "$stage/node"
cp -a "$npm_dir" "$stage/npm"
cp /etc/ssl/certs/ca-certificates.crt "$stage/ca-certificates.crt"
build node "$stage/node" "$stage/npm" "$stage/ca-certificates.crt" || { rm -rf "$stage"; exit 1; }
rm -rf "$stage"
build postgres "$here/postgres-entrypoint.sh"
build redis "$here/redis-entrypoint.sh"
build rabbitmq "$here/rabbitmq-entrypoint.sh"
build nginx
say "ready: $BASE and localhost/messenger-local/{node,postgres,redis,rabbitmq,nginx}:latest"
