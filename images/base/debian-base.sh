#!/usr/bin/env bash
# Make a Debian base image with debootstrap and load it into Docker under the official name
# (default debian:bookworm-slim), for machines that cannot pull from a registry. Dockerfiles
# keep their FROM lines unchanged. The mirror is read from this machine's apt configuration.
#   images/base/debian-base.sh [IMAGE] [SUITE] [ARCH]      e.g. debian:bookworm-slim bookworm arm64
#
# A local image store holds one architecture per name, so each image is also kept as
# IMAGE-ARCH (debian:bookworm-slim-arm64): switching the name between architectures is then a
# `docker tag`, not another debootstrap. Foreign architectures need qemu-user-static.
set -euo pipefail
image=${1:-debian:bookworm-slim}
suite=${2:-bookworm}
arch=${3:-$(dpkg --print-architecture)}
alias="$image-$arch"

arch_of() { docker image inspect -f '{{.Architecture}}' "$1" 2>/dev/null || true; }
if [ "$(arch_of "$image")" = "$arch" ]; then
  echo "$image ($arch) already present"; exit 0
fi
if [ "$(arch_of "$alias")" = "$arch" ]; then
  docker tag "$alias" "$image"; echo "$image ($arch) tagged from $alias"; exit 0
fi
command -v debootstrap >/dev/null || { echo "debian-base: debootstrap is not installed" >&2; exit 2; }

mirror=$(grep -h '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '{print $2}' \
         | grep -v security | head -n1 || true)
[ -n "$mirror" ] || mirror=$(grep -hE '^deb ' /etc/apt/sources.list 2>/dev/null \
                             | awk '{print $2}' | grep -v security | head -n1 || true)
[ -n "$mirror" ] || { echo "debian-base: no Debian mirror found in the apt configuration" >&2; exit 2; }

foreign=()
if [ "$arch" != "$(dpkg --print-architecture)" ]; then
  foreign=(--foreign)  # the second stage runs under qemu-user-static
  [ -e "/proc/sys/fs/binfmt_misc/qemu-${arch/arm64/aarch64}" ] || {
    echo "debian-base: no binfmt_misc handler for $arch: install qemu-user-static and mount" \
         "binfmt_misc (mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc)" >&2; exit 2; }
fi

root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
debootstrap --variant=minbase --arch="$arch" "${foreign[@]}" --include=ca-certificates \
  "$suite" "$root" "$mirror" >/dev/null
if ((${#foreign[@]})); then
  chroot "$root" /debootstrap/debootstrap --second-stage >/dev/null
fi
# Slim like the official image: no downloaded packages, apt lists, docs, man pages or locales.
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin \
       "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/info/* \
       "$root"/usr/share/locale/* "$root"/var/log/*.log "$root"/var/log/apt/*
# Like the official image: never keep downloaded .debs, docs or man pages in later layers.
cat > "$root/etc/dpkg/dpkg.cfg.d/docker-slim" <<'CFG'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
CFG
echo 'APT::Install-Recommends "false";' > "$root/etc/apt/apt.conf.d/docker-no-recommends"
echo "deb $mirror $suite main" > "$root/etc/apt/sources.list"
# `FROM scratch` + ADD rather than `docker import`: the image then records its architecture
# (20.10 engines ignore `docker import --platform` without experimental features).
ctx=$(mktemp -d)
trap 'rm -rf "$root" "$ctx"' EXIT
tar -C "$root" -cf "$ctx/rootfs.tar" .
rm -rf "$root"
cat > "$ctx/Dockerfile" <<'DOCKERFILE'
FROM scratch
ADD rootfs.tar /
ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
CMD ["/bin/bash"]
DOCKERFILE
docker build --quiet --platform "linux/$arch" -t "$alias" "$ctx" >/dev/null 2>&1 \
  || docker build --platform "linux/$arch" -t "$alias" "$ctx"
docker tag "$alias" "$image"
echo "$image ($arch) imported from $mirror $suite ($(docker image inspect -f '{{.Size}}' "$image" \
     | awk '{printf "%.0f MB", $1/1e6}'))"
