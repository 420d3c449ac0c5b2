"""llama.cpp's side of the peer bench (bench/bench_peers.py), run by the interpreter of its own
virtualenv (llama-cpp-python, which compiles llama.cpp for this CPU): nothing from the kit is
imported here, only llama-cpp-python's bindings of llama.h and numpy.

    python bench/llamacpp_worker.py quantize SRC.gguf DST.gguf q8_0|q4_0
    python bench/llamacpp_worker.py generate MODEL.gguf '{"prompt": [ids], "new": 128, "threads": 2}'

`quantize` is llama-quantize's own routine (llama_model_quantize, default parameters), from the
F32 file. `generate` decodes greedily through llama.h as llama.cpp's `simple` example does:
the prompt in one llama_decode, then one token per call, argmax of the last logits; one warm-up
generation, then the timed one (the KV cache cleared between). It prints one JSON line: TTFT
(prompt forward + first token), decode tok/s ((new - 1) / (t_last - t_first)), the tokens, and
this process's peak RSS (VmHWM), the file memory-mapped as llama.cpp does by default.
"""

from __future__ import annotations

import ctypes
import json
import sys
import time
from pathlib import Path

FTYPES = {"q8_0": 7, "q4_0": 2}  # LLAMA_FTYPE_MOSTLY_*


def peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def quantize(src: str, dst: str, kind: str) -> dict:
    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = FTYPES[kind]
    params.nthread = 0  # all cores
    t0 = time.perf_counter()
    rc = llama_cpp.llama_model_quantize(src.encode(), dst.encode(), ctypes.byref(params))
    if rc != 0:
        raise RuntimeError(f"llama_model_quantize({kind}) returned {rc}")
    return {"seconds": round(time.perf_counter() - t0, 2), "bytes": Path(dst).stat().st_size}


def generate(model_path: str, opts: dict) -> dict:
    import llama_cpp
    import numpy as np

    prompt, new, threads = opts["prompt"], opts["new"], opts["threads"]
    llama_cpp.llama_backend_init()
    # drop llama.cpp's model-loading chatter; the callback must outlive every call below
    quiet = llama_cpp.llama_log_callback(lambda level, text, data: None)
    llama_cpp.llama_log_set(quiet, ctypes.c_void_p(0))
    mparams = llama_cpp.llama_model_default_params()
    model = llama_cpp.llama_model_load_from_file(model_path.encode(), mparams)
    if not model:
        raise RuntimeError(f"llama.cpp could not load {model_path}")
    cparams = llama_cpp.llama_context_default_params()
    cparams.n_ctx = len(prompt) + new + 16
    cparams.n_batch = cparams.n_ubatch = max(len(prompt), 1)
    cparams.n_threads = cparams.n_threads_batch = threads
    ctx = llama_cpp.llama_init_from_model(model, cparams)
    if not ctx:
        raise RuntimeError("llama.cpp could not create a context")
    n_vocab = llama_cpp.llama_vocab_n_tokens(llama_cpp.llama_model_get_vocab(model))
    memory = llama_cpp.llama_get_memory(ctx)

    def step(ids: list[int]) -> int:
        arr = (llama_cpp.llama_token * len(ids))(*ids)
        if llama_cpp.llama_decode(ctx, llama_cpp.llama_batch_get_one(arr, len(ids))) != 0:
            raise RuntimeError("llama_decode failed")
        logits = llama_cpp.llama_get_logits_ith(ctx, -1)
        return int(np.ctypeslib.as_array(logits, shape=(n_vocab,)).argmax())

    def run() -> tuple[list[float], list[int]]:
        llama_cpp.llama_memory_clear(memory, True)
        stamps, tokens = [], []
        start = time.perf_counter()
        token = step(prompt)
        for _ in range(new):
            stamps.append(time.perf_counter() - start)
            tokens.append(token)
            if len(tokens) == new:
                break
            token = step([token])
        return stamps, tokens

    run()  # warm-up: allocations, repacked weights, thread pool
    stamps, tokens = run()
    out = {"ttft_ms": stamps[0] * 1000, "tok_s": (new - 1) / (stamps[-1] - stamps[0]),
           "total_ms": stamps[-1] * 1000, "tokens": tokens, "peak_rss_mb": round(peak_rss_mb(), 1),
           "llama_cpp_python": llama_cpp.__version__,
           "system_info": llama_cpp.llama_print_system_info().decode().strip()}
    llama_cpp.llama_free(ctx)
    llama_cpp.llama_model_free(model)
    return out


def main(argv: list[str]) -> int:
    if len(argv) == 4 and argv[0] == "quantize" and argv[3] in FTYPES:
        print(json.dumps(quantize(argv[1], argv[2], argv[3])))
        return 0
    if len(argv) == 3 and argv[0] == "generate":
        print(json.dumps(generate(argv[1], json.loads(argv[2]))))
        return 0
    print(__doc__.split("\n\n")[1], file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
