#!/usr/bin/env bash
# The companion page's two npm packages, from the npm registry: each pinned version's tarball
# (npm pack: no install, no scripts, no node_modules), checked against its pinned integrity,
# and only the files the page loads kept, with each package's package.json (version, MIT
# licence), all in one directory:
#   onnxruntime-web      the three files its wasm backend loads
#   @huggingface/jinja   its ESM build, as huggingface-jinja.mjs: chat templates in the page
#                        (the Jinja implementation transformers.js uses; one file, no imports)
#   android/fetch-web-deps.sh [DEST]     (default build/web-deps/onnxruntime-web)
# The edge server serves them at /companion/ (config companion_ort_dir when elsewhere);
# android/build.sh puts them into the APK.
set -euo pipefail
cd "$(dirname "$0")/.."

ORT_WEB_VERSION=1.30.0
ORT_WEB_INTEGRITY=sha512-q0y+JrrtukXSzsBWEMccVfqX25LRmosXHF+CaRJmg8pZClzcV7svNc4rKY3jL02Vb7QmRMDs1SigqR4CXAfKYQ==
ORT_FILES=(ort.wasm.min.mjs ort-wasm-simd-threaded.mjs ort-wasm-simd-threaded.wasm)  # edge_app/companion.py ORT_FILES
JINJA_VERSION=0.5.11
JINJA_INTEGRITY=sha512-YzEzwM5oQf4r0vs7ifWQ+yuVR1YkAHrjERQ+a8WRsStHHp4NRBg+NesjiFc+X2AFUpRvvrIeHDS1xFy9jY/IjQ==
JINJA_FILE=huggingface-jinja.mjs  # edge_app/companion.py JINJA_FILES
DEST=${1:-build/web-deps/onnxruntime-web}
VERSIONS="onnxruntime-web@$ORT_WEB_VERSION @huggingface/jinja@$JINJA_VERSION"

if [[ -f $DEST/VERSION && $(cat "$DEST/VERSION") == "$VERSIONS" ]]; then
  exit 0
fi
command -v npm >/dev/null || { echo "fetch-web-deps: npm is not installed (apt-get install nodejs npm)" >&2; exit 3; }

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# fetch SPEC INTEGRITY DIR MEMBER...: the package's tarball, checked; the members named (paths
# under package/) unpacked into $tmp/DIR/package/
fetch() {
  local spec=$1 integrity=$2 dir=$tmp/$3 tgz actual
  shift 3
  mkdir -p "$dir"
  if ! tgz=$(cd "$dir" && npm pack --silent "$spec" 2>"$dir/npm.log" | tail -1); then
    cat "$dir/npm.log" >&2
    echo "fetch-web-deps: npm pack $spec failed" >&2
    exit 1
  fi
  actual=$(node -e 'const c = require("crypto"), fs = require("fs");
    process.stdout.write("sha512-" + c.createHash("sha512").update(fs.readFileSync(process.argv[1])).digest("base64"))' "$dir/$tgz")
  if [[ $actual != "$integrity" ]]; then
    echo "fetch-web-deps: $spec integrity mismatch: got $actual" >&2
    exit 1
  fi
  tar -xzf "$dir/$tgz" -C "$dir" "${@/#/package/}"
}

fetch "onnxruntime-web@$ORT_WEB_VERSION" "$ORT_WEB_INTEGRITY" ort package.json "${ORT_FILES[@]/#/dist/}"
fetch "@huggingface/jinja@$JINJA_VERSION" "$JINJA_INTEGRITY" jinja package.json dist/index.js
mkdir -p "$DEST"
cp "${ORT_FILES[@]/#/$tmp/ort/package/dist/}" "$tmp/ort/package/package.json" "$DEST/"
cp "$tmp/jinja/package/dist/index.js" "$DEST/$JINJA_FILE"
cp "$tmp/jinja/package/package.json" "$DEST/huggingface-jinja.package.json"
echo "$VERSIONS" > "$DEST/VERSION"
echo "fetch-web-deps: $VERSIONS -> $DEST ($(du -sh "$DEST" | cut -f1))"
