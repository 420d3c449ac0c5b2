"""`python -m optimizer.rss_probe image MODEL LATENT_DIM BATCH` or
`python -m optimizer.rss_probe text MODEL SPEC_JSON PROMPT_TOKENS NEW_TOKENS`: peak memory of a
fresh process that loads a graph in ONNX Runtime (LiteRT for a .tflite image graph) and runs it
as the server would (an image batch three times; a text generation through the KV cache).

Prints JSON: `peak_rss_bytes` (VmHWM, the high-water mark of this process image) and
`model_rss_bytes` (that minus the resident size once numpy and the runtime are imported).
Not ru_maxrss: Linux carries it across exec, so a child of a torch-laden parent would report
the parent's peak. Imports no torch.
"""

import json
import sys
from pathlib import Path

import numpy as np

from edge_app.litert import LiteRTSession, is_litert_graph
from edge_app.system import memory

# ONNX Runtime is imported before the baseline is read (LiteRT's interpreter loads with its
# first session, so its library counts in model_rss_bytes).
if sys.argv[1:2] == ["image"] and is_litert_graph(sys.argv[2]):
    open_image_graph = LiteRTSession
else:
    import onnxruntime as ort

    def open_image_graph(model: str):
        return ort.InferenceSession(model, providers=["CPUExecutionProvider"])


def run_image(model: str, latent_dim: str, batch: str) -> None:
    session = open_image_graph(model)
    z = np.zeros((int(batch), int(latent_dim)), np.float32)
    for _ in range(3):
        session.run(None, {"z": z})


def run_text(model: str, spec_file: str, prompt_tokens: str, new_tokens: str) -> None:
    from edge_app.generation import parse_text_generation
    from edge_app.textgen import Decoder

    sections = json.loads(Path(spec_file).read_text(encoding="utf-8"))
    spec = parse_text_generation(sections["generation"], sections["graph"], spec_file)
    prompt = (np.arange(int(prompt_tokens)) % spec.vocab_size).tolist()
    Decoder.open(model, spec).generate(prompt, int(new_tokens), stop_at_eos=False)


def main() -> None:
    before = memory(Path("/"))["rss"]
    kind, *args = sys.argv[1:]
    {"image": run_image, "text": run_text}[kind](*args)
    peak = memory(Path("/"))["peak_rss"]
    print(json.dumps({"peak_rss_bytes": peak, "model_rss_bytes": peak - before}))


if __name__ == "__main__":
    main()
