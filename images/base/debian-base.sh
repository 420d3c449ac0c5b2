#!/usr/bin/env bash
# Make a Debian base image with debootstrap and `docker import` it under the official name
# (default debian:bookworm-slim), for machines that cannot pull from a registry. Dockerfiles
# keep their FROM lines unchanged. The mirror is read from this machine's apt configuration.
#   images/base/debian-base.sh [IMAGE] [SUITE] [ARCH]      e.g. debian:bookworm-slim bookworm arm64
set -euo pipefail
image=${1:-debian:bookworm-slim}
suite=${2:-bookworm}
arch=${3:-$(dpkg --print-architecture)}

if docker image inspect "$image" >/dev/null 2>&1 \
   && [ "$(docker image inspect -f '{{.Architecture}}' "$image")" = "$arch" ]; then
  echo "$image ($arch) already present"; exit 0
fi
command -v debootstrap >/dev/null || { echo "debian-base: debootstrap is not installed" >&2; exit 2; }

mirror=$(grep -h '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '{print $2}' \
         | grep -v security | head -n1 || true)
[ -n "$mirror" ] || mirror=$(grep -hE '^deb ' /etc/apt/sources.list 2>/dev/null \
                             | awk '{print $2}' | grep -v security | head -n1 || true)
[ -n "$mirror" ] || { echo "debian-base: no Debian mirror found in the apt configuration" >&2; exit 2; }

root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
foreign=()
[ "$arch" = "$(dpkg --print-architecture)" ] || foreign=(--foreign)  # second stage under qemu
debootstrap --variant=minbase --arch="$arch" "${foreign[@]}" --include=ca-certificates \
  "$suite" "$root" "$mirror" >/dev/null
if ((${#foreign[@]})); then
  chroot "$root" /debootstrap/debootstrap --second-stage >/dev/null
fi
# Slim like the official image: no apt lists, docs or man pages.
rm -rf "$root"/var/lib/apt/lists/* "$root"/usr/share/doc/* "$root"/usr/share/man/* \
       "$root"/var/cache/apt/*.bin
echo "deb $mirror $suite main" > "$root/etc/apt/sources.list"
tar -C "$root" -c . | docker import --platform "linux/$arch" \
  -c 'CMD ["/bin/bash"]' -c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  - "$image" >/dev/null
echo "$image ($arch) imported from $mirror $suite"
