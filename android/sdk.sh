#!/usr/bin/env bash
# The Android build tools, from Debian only (no Gradle, no Google SDK download):
#  - bookworm: aapt, zipalign, apksigner, and a JDK (javac, keytool), installed with apt-get
#    when missing (as root; otherwise this prints the command and exits 3);
#  - bullseye (bookworm has neither): android.jar API 23 (libandroid-23-java) and the dx dexer
#    (dalvik-exchange), downloaded through apt with a private configuration (the system's
#    sources and package state stay untouched), checked against the pinned sha256 and unpacked
#    under build/android-sdk, not installed.
# Prints nothing on success when everything is already there. Exit 3: cannot be installed here.
set -euo pipefail
cd "$(dirname "$0")/.."

SDK=${EDGEGEN_ANDROID_SDK:-build/android-sdk}
# When bullseye leaves deb.debian.org (its LTS ends mid-2026), point this at archive.debian.org.
MIRROR=${EDGEGEN_BULLSEYE_MIRROR:-http://deb.debian.org/debian}
PINNED=(
  "libandroid-23-java 6.0.1+r72-6 8af1b6df556971dda0a6da3536ea526a838e0c363afcdd454213d8bce94793e3"
  "dalvik-exchange 10.0.0+r36-1 8fc128db7c27253d963eb9b33de79b197162a4749d2ba69019b2fd0664cbd7fe"
)
ANDROID_JAR=$SDK/root/usr/share/java/com.android.android-23.jar
DX_JAR=$SDK/root/usr/share/java/com.android.dx-10.0.0.jar

need=()
for tool in aapt zipalign apksigner; do command -v $tool >/dev/null || need+=($tool); done
command -v javac >/dev/null && command -v keytool >/dev/null || need+=(default-jdk-headless)
if ((${#need[@]})); then
  if [[ $(id -u) != 0 ]] || ! command -v apt-get >/dev/null; then
    echo "android/sdk.sh: missing ${need[*]}; install with: sudo apt-get install --no-install-recommends ${need[*]}" >&2
    exit 3
  fi
  echo "android/sdk.sh: apt-get install ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${need[@]}"; } >"${TMPDIR:-/tmp}/edgegen-sdk-apt.log" 2>&1 || {
    tail -20 "${TMPDIR:-/tmp}/edgegen-sdk-apt.log" >&2
    echo "android/sdk.sh: apt-get install ${need[*]} failed" >&2
    exit 3
  }
fi

if [[ -f $ANDROID_JAR && -f $DX_JAR ]]; then
  exit 0
fi
apt=$SDK/apt
mkdir -p "$apt/lists/partial" "$apt/cache/archives/partial" "$SDK/debs"
: > "$apt/status"
echo "deb $MIRROR bullseye main" > "$apt/sources.list"
opts=(-o "Dir::Etc::sourcelist=$PWD/$apt/sources.list" -o Dir::Etc::sourceparts=-
      -o "Dir::State::Lists=$PWD/$apt/lists" -o "Dir::Cache=$PWD/$apt/cache"
      -o "Dir::State::status=$PWD/$apt/status" -o Debug::NoLocking=1 -o APT::Sandbox::User=root)
echo "android/sdk.sh: fetching ${PINNED[*]%% *} from bullseye ($MIRROR)"
apt-get "${opts[@]}" update -qq || { echo "android/sdk.sh: apt-get update for bullseye failed" >&2; exit 3; }
for entry in "${PINNED[@]}"; do
  read -r name version sha <<<"$entry"
  (cd "$SDK/debs" && apt-get "${opts[@]}" download -qq "$name=$version") ||
    { echo "android/sdk.sh: cannot download $name=$version" >&2; exit 3; }
  deb=$(ls "$SDK/debs/${name}_"*"_all.deb")
  echo "$sha  $deb" | sha256sum --quiet -c - || { echo "android/sdk.sh: $deb does not match its pinned sha256" >&2; exit 1; }
  dpkg-deb -x "$deb" "$SDK/root"
done
test -f "$ANDROID_JAR" && test -f "$DX_JAR"
