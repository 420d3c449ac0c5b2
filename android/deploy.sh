#!/usr/bin/env bash
# Build the companion APK (android/build.sh) and install it on the attached phone with
# `adb install -r`, then start it. With no phone attached (or no adb), print the APK's path and
# the exact commands to run once one is.
#   android/deploy.sh [BUNDLE_DIR ...]
# Env: ANDROID_SERIAL  which phone, when several are attached (adb's own variable)
#      PUSHGATEWAY, PHONE_NAME  the fleet's Pushgateway URL and this phone's device name, passed
#                   to the app at start (it keeps them); unset: the app pushes nothing
#      ADB          the adb binary (default: adb on PATH)
#      APK_OUT      where the APK is built (default build/android)
set -euo pipefail
cd "$(dirname "$0")/.."

android/build.sh "$@"
APK=$(realpath "${APK_OUT:-build/android}")/edgegen-companion.apk
ACTIVITY=net.edgegen.companion/.MainActivity
ADB=${ADB:-adb}
start=(shell am start -n "$ACTIVITY")
[[ -n ${PUSHGATEWAY:-} ]] && start+=(--es pushgateway "$PUSHGATEWAY" --es device "${PHONE_NAME:?set PHONE_NAME with PUSHGATEWAY}")

manual() {
  echo "$1"
  echo "APK: $APK"
  echo "Once a phone is attached (USB debugging on, 'adb devices' lists it as 'device'):"
  echo "  adb install -r $APK"
  echo "  adb ${start[*]}"
}

if ! command -v "$ADB" >/dev/null; then
  manual "deploy: adb is not installed (apt-get install adb), so nothing was installed."
  exit 0
fi
mapfile -t phones < <("$ADB" devices | awk 'NR > 1 && $2 == "device" {print $1}')
mapfile -t waiting < <("$ADB" devices | awk 'NR > 1 && $2 == "unauthorized" {print $1}')
if [[ -n ${ANDROID_SERIAL:-} ]]; then
  phones=("$ANDROID_SERIAL")
fi
if ((${#phones[@]} == 0)); then
  hint="deploy: no phone attached."
  ((${#waiting[@]})) && hint="deploy: ${waiting[*]} attached but unauthorized: accept the USB debugging prompt on the phone."
  manual "$hint"
  exit 0
fi
if ((${#phones[@]} > 1)); then
  echo "deploy: several phones attached (${phones[*]}): choose one with ANDROID_SERIAL=<serial>" >&2
  exit 2
fi
echo "deploy: installing on ${phones[0]}"
"$ADB" -s "${phones[0]}" install -r "$APK"
"$ADB" -s "${phones[0]}" "${start[@]}"
