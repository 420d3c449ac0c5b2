"""LiteRT graphs for the tests, converted in a process of their own: litert-torch imports JAX,
which warns at every os.fork() of a process that imported it (an error under pytest, and
ansible-runner forks for every playbook). The tests run this module and read what it wrote.

    python -m tests.litert_graphs tiny OUT
        a small random DCGAN generator (BatchNorm statistics made non-trivial): its weights
        (OUT/generator.pt) and LiteRT graphs OUT/{fp32,fp16,sub,int8}.tflite (int8 from the
        sub-pixel graph), through the optimizer's own litert code
    python -m tests.litert_graphs bundles CHECKPOINT SOURCE OUT
        the `litert` pass (FP32 and INT8) on a DCGAN checkpoint, as LiteRT bundles of the image
        bundle SOURCE (its manifest with the LiteRT graph in place of the ONNX one) under OUT;
        prints {precision: bundle path} as JSON
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import torch

LATENT = 16


def tiny(out: Path) -> None:
    from edge_app.latent import normal_latents
    from optimizer.models.dcgan import DCGANConfig, Generator
    from optimizer.passes import litert, subpixel

    torch.manual_seed(0)
    cfg = DCGANConfig(latent_dim=LATENT, image_size=32, channels=1, ngf=8, ndf=8)
    gen = Generator(cfg).train()
    with torch.no_grad():  # running statistics of real activations, then eval mode
        for _ in range(4):
            gen(torch.randn(32, LATENT))
    gen.eval()
    out.mkdir(parents=True, exist_ok=True)
    torch.save({"cfg": dataclasses.asdict(cfg), "state": gen.state_dict()}, out / "generator.pt")
    fp32 = litert.convert(gen, LATENT, out / "fp32.tflite")
    litert.quantize(fp32, out / "fp16.tflite", "fp16", None)
    sub = litert.convert(subpixel.rewrite(gen), LATENT, out / "sub.tflite")
    litert.quantize(sub, out / "int8.tflite", "int8", normal_latents(0, 64, LATENT))


def load_tiny(out: Path) -> torch.nn.Module:
    """The generator `tiny` saved, in eval mode."""
    from optimizer.models.dcgan import DCGANConfig, Generator

    saved = torch.load(out / "generator.pt", weights_only=True)
    gen = Generator(DCGANConfig(**saved["cfg"]))
    gen.load_state_dict(saved["state"])
    return gen.eval()


def bundles(checkpoint: Path, source: Path, out: Path) -> dict[str, str]:
    from edge_app.bundle import write_bundle
    from optimizer.families import Subject
    from optimizer.families.dcgan import FAMILY as DCGAN
    from optimizer.graphs import graph_needs
    from optimizer.passes import apply

    manifest = json.loads((source / "manifest.json").read_text())
    graph = {k: manifest["graph"][k] for k in ("inputs", "outputs")}
    written = {}
    for precision in ("fp32", "int8"):
        subject = apply("litert", {"precision": precision, "timing_repeats": 3},
                        Subject(DCGAN.load_checkpoint(checkpoint)), DCGAN, out / precision)
        name = f"{manifest['name']}-litert-{precision}"
        meta = {**{k: v for k, v in manifest.items() if k not in ("files", "schema_version")},
                "name": name, "precision": precision, "model_file": "model.tflite",
                "graph": {**graph, **graph_needs(subject.graph)},
                "techniques": [*(t for t in manifest["techniques"] if t["name"] != "export"),
                               {"name": "litert", "params": subject.info},
                               {"name": "export", "params": {"format": "tflite"}}]}
        written[precision] = str(write_bundle(out / "bundles" / name, meta,
                                              {"model.tflite": subject.graph}).path)
    return written


def run(*args: str) -> str:
    """This module in a fresh interpreter (from the test process); its standard output."""
    import subprocess

    result = subprocess.run([sys.executable, "-m", "tests.litert_graphs", *args],
                            cwd=Path(__file__).resolve().parents[1], capture_output=True,
                            text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


if __name__ == "__main__":
    command, *rest = sys.argv[1:]
    if command == "tiny":
        tiny(Path(rest[0]))
    else:
        print(json.dumps(bundles(*map(Path, rest))))
