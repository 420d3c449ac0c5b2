#!/usr/bin/env bash
# Build the companion APK without Gradle, from Debian's Android tools (android/sdk.sh):
# aapt (resources, packaging) -> javac against android.jar API 23 -> dx (classes.dex) ->
# zipalign -> apksigner with a debug key made by keytool (kept in build/android, never
# committed). About 5 s once the tools are there.
#   android/build.sh [BUNDLE_DIR ...]      -> build/android/edgegen-companion.apk
# Env: PYTHON (with edge_app importable; default .venv/bin/python, else python3),
#      ORT_DIR (onnxruntime-web files; fetched by android/fetch-web-deps.sh when missing),
#      APK_OUT (default build/android; the debug key is made there once and kept: a phone
#      accepts `adb install -r` only from the key it was first installed with).
set -euo pipefail
cd "$(dirname "$0")/.."

OUT=${APK_OUT:-build/android}
APK=$OUT/edgegen-companion.apk
SDK=${EDGEGEN_ANDROID_SDK:-build/android-sdk}
ANDROID_JAR=$SDK/root/usr/share/java/com.android.android-23.jar
DX_JAR=$SDK/root/usr/share/java/com.android.dx-10.0.0.jar
ORT_DIR=${ORT_DIR:-build/web-deps/onnxruntime-web}
PYTHON=${PYTHON:-$( [[ -x .venv/bin/python ]] && echo .venv/bin/python || echo python3 )}
KEYSTORE=$OUT/debug.keystore
VERSION=$(sed -n 's/^__version__ = "\(.*\)"/\1/p' edge_app/__init__.py)  # the APK's versionName

android/sdk.sh
[[ -f $ORT_DIR/ort-wasm-simd-threaded.wasm ]] || android/fetch-web-deps.sh "$ORT_DIR"

rm -rf "$OUT/gen" "$OUT/classes" "$OUT/assets" "$OUT"/*.apk "$OUT/classes.dex"
mkdir -p "$OUT/gen" "$OUT/classes"
"$PYTHON" android/stage_assets.py "$OUT/assets" "$ORT_DIR" "$@"

aapt package -f -m -J "$OUT/gen" -M android/AndroidManifest.xml -S android/res -I "$ANDROID_JAR"
# dx reads class files up to Java 8 and does not desugar: sources are Java 7 style.
javac -source 8 -target 8 -Xlint:all,-options -Werror -encoding UTF-8 -bootclasspath "$ANDROID_JAR" \
  -d "$OUT/classes" $(find android/src "$OUT/gen" -name '*.java')
java -jar "$DX_JAR" --dex --min-sdk-version=24 --output="$OUT/classes.dex" "$OUT/classes"
# wasm and models stored, not deflated: AssetManager streams them without inflating.
# --debug-mode: android:debuggable, as a Gradle debug build, so chrome://inspect reaches the page.
aapt package -f --debug-mode --version-name "$VERSION" -M android/AndroidManifest.xml -S android/res \
  -A "$OUT/assets" -I "$ANDROID_JAR" -0 wasm -0 onnx -0 data -F "$OUT/unsigned.apk"
(cd "$OUT" && aapt add -f unsigned.apk classes.dex >/dev/null)
zipalign -f -p 4 "$OUT/unsigned.apk" "$OUT/aligned.apk"

if [[ ! -f $KEYSTORE ]]; then
  keytool -genkeypair -keystore "$KEYSTORE" -storepass android -keypass android \
    -alias androiddebugkey -keyalg RSA -keysize 2048 -validity 10000 \
    -dname "CN=Android Debug,O=Android,C=US" 2>/dev/null
fi
apksigner sign --ks "$KEYSTORE" --ks-pass pass:android --ks-key-alias androiddebugkey \
  --out "$APK" "$OUT/aligned.apk"
rm -f "$OUT/unsigned.apk" "$OUT/aligned.apk" "$APK.idsig"
echo "android/build.sh: $APK ($(du -h "$APK" | cut -f1)), signed with the debug key $KEYSTORE"
