#!/usr/bin/env bash
# onnxruntime-web for the companion page, from the npm registry: the pinned version's tarball
# (npm pack: no install, no scripts, no node_modules), checked against the pinned integrity,
# and only the three files the wasm backend loads kept, with the package's package.json
# (version, MIT licence).
#   android/fetch-web-deps.sh [DEST]     (default build/web-deps/onnxruntime-web)
# The edge server serves them at /companion/ (config companion_ort_dir when elsewhere);
# android/build.sh puts them into the APK.
set -euo pipefail
cd "$(dirname "$0")/.."

ORT_WEB_VERSION=1.30.0
ORT_WEB_INTEGRITY=sha512-q0y+JrrtukXSzsBWEMccVfqX25LRmosXHF+CaRJmg8pZClzcV7svNc4rKY3jL02Vb7QmRMDs1SigqR4CXAfKYQ==
FILES=(ort.wasm.min.mjs ort-wasm-simd-threaded.mjs ort-wasm-simd-threaded.wasm)  # edge_app/companion.py ORT_FILES
DEST=${1:-build/web-deps/onnxruntime-web}

if [[ -f $DEST/VERSION && $(cat "$DEST/VERSION") == "$ORT_WEB_VERSION" ]]; then
  exit 0
fi
command -v npm >/dev/null || { echo "fetch-web-deps: npm is not installed (apt-get install nodejs npm)" >&2; exit 3; }

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
if ! tgz=$(cd "$tmp" && npm pack --silent "onnxruntime-web@$ORT_WEB_VERSION" 2>"$tmp/npm.log" | tail -1); then
  cat "$tmp/npm.log" >&2
  echo "fetch-web-deps: npm pack onnxruntime-web@$ORT_WEB_VERSION failed" >&2
  exit 1
fi
actual=$(node -e 'const c = require("crypto"), fs = require("fs");
  process.stdout.write("sha512-" + c.createHash("sha512").update(fs.readFileSync(process.argv[1])).digest("base64"))' "$tmp/$tgz")
if [[ $actual != "$ORT_WEB_INTEGRITY" ]]; then
  echo "fetch-web-deps: onnxruntime-web $ORT_WEB_VERSION integrity mismatch: got $actual" >&2
  exit 1
fi
tar -xzf "$tmp/$tgz" -C "$tmp" package/package.json "${FILES[@]/#/package/dist/}"
mkdir -p "$DEST"
cp "${FILES[@]/#/$tmp/package/dist/}" "$tmp/package/package.json" "$DEST/"
echo "$ORT_WEB_VERSION" > "$DEST/VERSION"
echo "fetch-web-deps: onnxruntime-web $ORT_WEB_VERSION -> $DEST ($(du -sh "$DEST" | cut -f1))"
