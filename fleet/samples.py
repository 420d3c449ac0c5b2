"""What each reported bundle generates, for the report: a seeded grid of images per image bundle,
greedy completions of fixed prompts per text bundle.

They come from the server's own code (edge_app's loader, warm-up, latent RNG, PNG mapping,
tokenizer and decoder), run here with ONNX Runtime on the CPU, from the bundle as it is under
`--bundles`. A bundle is sampled only when it is the one that was measured (its model file has
the sha256 the results recorded); otherwise, or when ONNX Runtime is not installed here, the
report says in one line why it shows no samples. Each sample carries its method (seed, latent
RNG, prompts, tokens, model sha256, ONNX Runtime version), so anyone can redraw it from a
device: image i of the grid is image i of `POST /v1/images/generations` with the same seed and
n, each completion that of `POST /v1/completions` with temperature 0 and the same max_tokens.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

IMAGE_SEED = 0
GRID = 4  # a GRID x GRID grid of images, no gaps: tile i (row-major) is image i
PROMPTS = ("The value of", "def __init__(self", "if a < b and")
NEW_TOKENS = 24
CPU = "CPUExecutionProvider"


@dataclass
class Sample:
    """One bundle's samples, or the reason it has none (`note`)."""

    bundle: str
    family: str
    task: str
    method: str = ""
    grid: Path | None = None  # image bundles: the grid PNG
    completions: list[dict] = field(default_factory=list)  # text bundles: prompt, completion
    note: str = ""

    def as_json(self) -> dict:
        return {"bundle": self.bundle, "family": self.family, "task": self.task,
                "method": self.method, "grid": self.grid.name if self.grid else None,
                "completions": self.completions, "note": self.note}


def samples(bundles: list[dict], bundles_dir: Path, out: Path) -> list[Sample]:
    """Samples of each bundle's facts as the results recorded them (edge_app bench's manifest
    facts: name, family, task, model_sha256), their grids written into `out`."""
    made = []
    for facts in bundles:
        s = Sample(facts["name"], facts["family"], facts["task"])
        try:
            _sample(s, facts.get("model_sha256"), Path(bundles_dir) / s.bundle, out)
        except _NoSamples as why:
            s.note = f"no samples: {why}"
        made.append(s)
    return made


class _NoSamples(Exception):
    """Why a bundle has no samples, in a few words."""


def _sample(s: Sample, measured_sha: str | None, path: Path, out: Path) -> None:
    if not (path / "manifest.json").is_file():
        raise _NoSamples(f"the bundle is not under {path.parent} on this machine "
                         f"(pass --bundles DIR where it is)")
    try:
        import onnxruntime  # the report extra installs it; where it is not, the note says so
    except ImportError:
        raise _NoSamples("ONNX Runtime is not installed here (pip install 'edgegen[report]')") \
            from None
    from edge_app.bundle import BundleError, load_bundle
    from edge_app.config import Config
    from edge_app.runtime import load_model

    try:
        bundle = load_bundle(path)
        sha = bundle.manifest.files[bundle.manifest.model_file].sha256
        if measured_sha and sha != measured_sha:
            raise _NoSamples(f"{path} has another model file than the one measured "
                             f"(sha256 {sha[:12]}, measured {measured_sha[:12]}): rebuilt since")
        # The server's loader and warm-up, on the CPU of the machine making the report.
        model = load_model(bundle, Config(execution_providers=(CPU,)), placement=False)
    except BundleError as exc:
        raise _NoSamples(str(exc).splitlines()[0][:300]) from None
    runtime = f"ONNX Runtime {onnxruntime.__version__} on {CPU}"
    if bundle.manifest.task == "image-generation":
        _image_grid(s, model, sha, runtime, out)
    else:
        _completions(s, model, sha, runtime)


def _image_grid(s: Sample, model, sha: str, runtime: str, out: Path) -> None:
    from edge_app.png import encode_png, to_uint8

    gen = model.bundle.manifest.generation
    n = GRID * GRID
    tiles = to_uint8(model.generate(n, IMAGE_SEED), gen.image.value_range)  # (n, H, W, C)
    _, h, w, c = tiles.shape
    grid = tiles.reshape(GRID, GRID, h, w, c).transpose(0, 2, 1, 3, 4).reshape(GRID * h,
                                                                                GRID * w, c)
    out.mkdir(parents=True, exist_ok=True)
    s.grid = out / f"samples-{s.bundle}.png"
    s.grid.write_bytes(encode_png(grid))
    s.method = (f"{n} images ({GRID}x{GRID}, row by row), seed {IMAGE_SEED}, latent "
                f"{gen.latent.rng} ({gen.latent.dim}-d normal): image i is image i of "
                f"/v1/images/generations with seed {IMAGE_SEED}, n {n}; {h}x{w} px each; "
                f"model sha256 {sha[:12]}; {runtime}")


def _completions(s: Sample, model, sha: str, runtime: str) -> None:
    from edge_app.textgen import GREEDY

    for prompt in PROMPTS:
        res = model.generate(model.encode(prompt), NEW_TOKENS, GREEDY)
        s.completions.append({"prompt": prompt, "completion": model.decode(res.tokens),
                              "tokens": len(res.tokens), "finish_reason": res.finish_reason})
    s.method = (f"Greedy (temperature 0), at most {NEW_TOKENS} new tokens, stopping at eos: "
                f"each is /v1/completions' text for its prompt with temperature 0, max_tokens "
                f"{NEW_TOKENS}; model sha256 {sha[:12]}; {runtime}")



# --------------------------------------------------------------------------- in the report

def _fence(text: str) -> str:
    """A Markdown code fence longer than any run of backticks in `text`."""
    longest, run = 0, 0
    for ch in text:
        run = run + 1 if ch == "`" else 0
        longest = max(longest, run)
    return "`" * max(3, longest + 1)


def markdown(made: list[Sample]) -> list[str]:
    """The report.md lines of the samples, one subsection per family."""
    lines = []
    for fam in sorted({s.family for s in made}):
        lines += [f"### {fam}", ""]
        for s in (s for s in made if s.family == fam):
            lines += [f"#### {s.bundle}", "", f"{s.note or s.method}.", ""]
            if s.grid:
                lines += [f"![samples of {s.bundle}](figures/{s.grid.name})", ""]
            for c in s.completions:
                text = c["prompt"] + c["completion"]
                fence = _fence(text)
                lines += [f"Prompt `{c['prompt']}`, {c['tokens']} tokens "
                          f"({c['finish_reason']}):", "", f"{fence}text", text, fence, ""]
    return lines


def html_section(made: list[Sample]) -> str:
    """The report.html part of the samples: grids inline (scaled up, pixels kept sharp), each
    completion after its prompt, all text escaped."""
    import base64
    import html

    parts = []
    for fam in sorted({s.family for s in made}):
        parts.append(f"<h3>{html.escape(fam)}</h3>")
        for s in (s for s in made if s.family == fam):
            name = html.escape(s.bundle)
            parts.append(f"<h4>{name}</h4>")
            if s.note:
                parts.append(f'<p class="note">{html.escape(s.note)}.</p>')
                continue
            body = ""
            if s.grid:
                data = s.grid.read_bytes()
                width = int.from_bytes(data[16:20], "big")  # IHDR
                scale = max(1, 256 // width)
                body = (f'<img class="samples" alt="samples of {name}" width="{width * scale}" '
                        f'src="data:image/png;base64,{base64.b64encode(data).decode()}">')
            body += "".join(
                f'<pre class="completion"><span class="prompt">{html.escape(c["prompt"])}'
                f'</span>{html.escape(c["completion"])}</pre>' for c in s.completions)
            parts.append(f"<figure>{body}<figcaption>{html.escape(s.method)}.</figcaption>"
                         f"</figure>")
    return "".join(parts)
