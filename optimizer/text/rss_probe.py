"""`python -m optimizer.text.rss_probe MODEL SPEC_JSON PROMPT_TOKENS NEW_TOKENS`: peak memory of a
fresh process that loads a decoder graph in ONNX Runtime and generates, as the server would.

Prints JSON: `peak_rss_bytes` (VmHWM, the high-water mark of this process image) and
`model_rss_bytes` (that minus the resident size once numpy and onnxruntime are imported).
Not ru_maxrss: Linux carries it across exec, so a child of a torch-laden parent would report
the parent's peak. Imports no torch.
"""

import json
import sys
from pathlib import Path

import numpy as np
import onnxruntime  # noqa: F401  (imported before the baseline reading on purpose)

from edge_app.bundle import parse_text_generation
from edge_app.system import memory
from edge_app.textgen import Decoder


def main() -> None:
    model, spec_file, prompt_tokens, new_tokens = sys.argv[1:5]
    before = memory(Path("/"))["rss"]
    sections = json.loads(open(spec_file, encoding="utf-8").read())
    spec = parse_text_generation(sections["generation"], sections["graph"], spec_file)
    dec = Decoder.open(model, spec)
    prompt = (np.arange(int(prompt_tokens)) % spec.vocab_size).tolist()
    dec.generate(prompt, int(new_tokens), stop_at_eos=False)
    peak = memory(Path("/"))["peak_rss"]
    print(json.dumps({"peak_rss_bytes": peak, "model_rss_bytes": peak - before}))


if __name__ == "__main__":
    main()
