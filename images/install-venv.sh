#!/bin/sh
# Build stage of the edge images (images/edge/Dockerfile, images/jetson/Dockerfile): the server's
# virtualenv at /opt/edgegen from the wheelhouse in /tmp/wheelhouse (the build context), with
# nothing from the network. Copied into the context by `python -m fleet images`.
set -eu
wh=/tmp/wheelhouse
# No pip in the virtualenv (a server never installs anything): Debian's pip wheel (python3-venv
# brings it) runs with the venv's interpreter instead. ensurepip would install pip and setuptools
# only for them to be removed, which under qemu (the Pi's arm64 builds) costs a minute.
python3 -m venv --without-pip /opt/edgegen
pipwheel=$(ls /usr/share/python-wheels/pip-*.whl | head -n1)
pip="/opt/edgegen/bin/python $pipwheel/pip --disable-pip-version-check install --no-index \
     --no-cache-dir --no-compile --find-links $wh -c $wh/constraints.txt"
# Dependencies from requirements.txt (they name the class's ONNX Runtime build, e.g.
# onnxruntime-gpu); edgegen itself without its declared extras; tokenizers without
# huggingface_hub (bundles carry tokenizer.json, a device downloads nothing).
$pip -r $wh/requirements.txt
$pip --no-deps -r $wh/requirements-nodeps.txt $wh/edgegen-*.whl
# onnxruntime-web for the /companion/ page, gzipped (served with Content-Encoding).
mkdir -p /opt/edgegen/share/onnxruntime-web
if [ -d $wh/web ]; then cp $wh/web/* /opt/edgegen/share/onnxruntime-web/; fi
# What a device never runs: ONNX Runtime's model-conversion and quantization tooling, test
# suites (the Pi image stays < 300 MB). The edgegen wheel already carries edge_app only.
cd /opt/edgegen/lib/python3*/site-packages
rm -rf onnxruntime/transformers onnxruntime/quantization onnxruntime/tools
find . -depth -type d -name tests -exec rm -rf {} +
# ONNX Runtime's C library (27 MB on arm64): the Python binding is linked statically and never
# loads it. Kept where the build has provider libraries (onnxruntime-gpu), which might.
if [ -d onnxruntime/capi ] && ! ls onnxruntime/capi/libonnxruntime_providers_*.so 2>/dev/null \
     | grep -qv providers_shared; then
  rm -f onnxruntime/capi/libonnxruntime.so.*
fi
# LiteRT (in images of classes serving LiteRT bundles): its interpreter only, the files
# litert-keep.txt names; not its WebGPU and NPU accelerators, converter, calibration and model
# tools (on x86, 18 of its 59 MB stay).
if [ -d ai_edge_litert ]; then
  for f in ai_edge_litert/*; do
    grep -qxF "${f#ai_edge_litert/}" $wh/litert-keep.txt || rm -rf "$f"
  done
fi
# Bytecode last, for what is left, on every core (pip compiles one file at a time): the server
# user cannot write under /opt, so without it each start would compile every import again.
/opt/edgegen/bin/python -m compileall -q -j 0 /opt/edgegen/lib
