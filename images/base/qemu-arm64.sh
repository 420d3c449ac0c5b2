#!/usr/bin/env bash
# Let this amd64 host build and run linux/arm64 images: qemu-user through binfmt_misc, with the
# flags F (the interpreter is opened now, so containers need no copy of it) and C (credentials:
# setuid programs such as sudo work in arm64 containers, as on a real Pi). Needs root;
# idempotent.
#
# bookworm's qemu 7.2 crashes loading ONNX Runtime's aarch64 build (SIGSEGV in its native
# module); qemu 10 from bookworm-backports runs it. Its static qemu-aarch64 is fetched through a
# private apt configuration (the host's sources stay as they are), checked against the pinned
# sha256 below, and installed as $QEMU_BIN.
set -euo pipefail
QEMU_DEB_VERSION="1:10.0.2+ds-2+deb13u1~bpo12+1"
QEMU_DEB_SHA256="10a2dec99f2b2d0b1097ff0375aea35b89322d6631fc96700511b02e05bf6fef"
QEMU_BIN=/usr/local/libexec/edgegen/qemu-aarch64-static
MIRROR=${EDGEGEN_DEBIAN_MIRROR:-http://deb.debian.org/debian}

bm=/proc/sys/fs/binfmt_misc
[ -e "$bm/register" ] || mount -t binfmt_misc binfmt_misc "$bm"

if ! "$QEMU_BIN" --version 2>/dev/null | grep -qF "${QEMU_DEB_VERSION#1:}"; then
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  mkdir -p "$tmp/lists/partial" "$tmp/cache/archives/partial"
  echo "deb $MIRROR bookworm-backports main" > "$tmp/sources.list"
  apt=(-o Dir::Etc::SourceList="$tmp/sources.list" -o Dir::Etc::SourceParts=/dev/null
       -o Dir::State::Lists="$tmp/lists" -o Dir::Cache="$tmp/cache" -o APT::Sandbox::User=root)
  apt-get "${apt[@]}" update -qq
  (cd "$tmp" && apt-get "${apt[@]}" download -qq "qemu-user=$QEMU_DEB_VERSION")
  deb=$(ls "$tmp"/qemu-user_*.deb)
  echo "$QEMU_DEB_SHA256  $deb" | sha256sum -c --quiet - \
    || { echo "qemu-arm64: $deb does not match the pinned sha256" >&2; exit 2; }
  dpkg-deb -x "$deb" "$tmp/root"
  install -D -m 0755 "$tmp/root/usr/bin/qemu-aarch64" "$QEMU_BIN"
fi

if [ -e "$bm/qemu-aarch64" ]; then
  if grep -qx "interpreter $QEMU_BIN" "$bm/qemu-aarch64" && grep -q '^flags: .*C' "$bm/qemu-aarch64" \
     && grep -qx enabled "$bm/qemu-aarch64"; then
    echo "arm64 binfmt handler: $("$QEMU_BIN" --version | head -n1) (flags $(sed -n 's/^flags: //p' "$bm/qemu-aarch64"))"
    exit 0
  fi
  echo -1 > "$bm/qemu-aarch64"  # registered by another package: replace it
fi
magic='\x7f\x45\x4c\x46\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\xb7\x00'
mask='\xff\xff\xff\xff\xff\xff\xff\x00\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff\xff'
echo ":qemu-aarch64:M:0:$magic:$mask:$QEMU_BIN:FC" > "$bm/register"
echo "arm64 binfmt handler registered: $("$QEMU_BIN" --version | head -n1) (flags FC)"
