#!/usr/bin/env bash
# Build the images with podman, reusing its layer cache:
#
#   docker/build.sh            the rendezvous and kafka images on official base images
#   docker/build.sh --local    the same on a Debian base built here from Debian packages
#                              (mmdebstrap), for machines that reach no image registry
#
#   TAG=dev                    the images' tag (localhost/rendezvous:TAG, localhost/rendezvous-kafka:TAG)
#   CONTAINERS_CONF            podman's settings (default: docker/containers.conf)
#
# The local base trusts the certificate authorities this machine adds to Debian's
# (/usr/local/share/ca-certificates), so that apt, pip and Maven inside the build reach the
# registries through the same TLS proxy, if there is one.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="$(dirname "$here")"
export CONTAINERS_CONF="${CONTAINERS_CONF:-$here/containers.conf}"
tag="${TAG:-dev}"
local_base=localhost/debian-base:bookworm
args=()

if [ "${1:-}" = "--local" ]; then
    if ! podman image exists "$local_base"; then
        echo "building $local_base from Debian packages ..."
        rootfs="$(mktemp -d)/rootfs.tar"
        hooks=()
        if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
            hooks+=(--customize-hook='copy-in /usr/local/share/ca-certificates /usr/local/share')
            hooks+=(--customize-hook='chroot "$1" update-ca-certificates')
        fi
        mmdebstrap --quiet --variant=minbase --include=ca-certificates "${hooks[@]}" \
            bookworm "$rootfs"
        podman import --quiet "$rootfs" "$local_base" >/dev/null
        rm -rf "$(dirname "$rootfs")"
    fi
    args+=(--build-arg "BASE=$local_base" --build-arg "KAFKA_BASE=$local_base")
fi

for target in kafka rendezvous; do
    name="localhost/rendezvous${target#rendezvous}"
    [ "$target" = kafka ] && name=localhost/rendezvous-kafka
    echo "building $name:$tag ..."
    podman build --network=host "${args[@]}" -f "$here/Containerfile" --target "$target" \
        -t "$name:$tag" "$root"
done
