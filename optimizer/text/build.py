"""Run a text (GPT-2) recipe: per seed, train or fine-tune the teacher (the baseline), derive
each point by its passes, export with the KV cache (validated), quantize, evaluate the graph
that ships, gate, bundle; then the results tables with statistics across seeds."""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import sacrebleu
import tokenizers
import torch
import transformers
from tokenizers import Tokenizer
from transformers import GPT2LMHeadModel

from edge_app.bundle import write_bundle
from edge_app.textgen import Decoder

from ..build import Ledger, RecipeResult, run_provenance
from ..errors import OptimizerError, RecipeError
from ..recipe import GateConfig, Recipe
from ..tracking import Tracker
from . import evaluate as ev
from .corpus import load_corpus
from .export import (ExportError, export_decoder, generation_manifest, generation_spec,
                     graph_manifest, validate)
from ..models.dcgan import count_parameters
from .model import from_checkpoint, gpt2_config, nonzero_parameters, save_checkpoint
from .passes import TEXT_PASSES, make_text_config, quantize
from .tokenizer import encode_documents, eos_id, load_checkpoint_tokenizer, train_tokenizer
from .train import blocks, train_lm

log = logging.getLogger(__name__)
PRECISION = {"dynamic-int8": "int8", "fp16": "fp16"}


@dataclass
class TextContext:
    recipe: Recipe
    train: torch.Tensor  # (n, block) token blocks
    val: torch.Tensor
    seed: int
    progress: bool = True


@dataclass
class TextData:
    tokenizer: Tokenizer
    eos: int
    train: torch.Tensor
    val: torch.Tensor
    test_stream: list[int]
    info: dict


def prepare(recipe: Recipe, runs_dir: Path) -> TextData:
    spec = recipe.model_config
    opts = dict(recipe.data.options)
    limit = opts.pop("limit", None)
    if opts:
        raise RecipeError(f"recipe: unknown data.options {sorted(opts)} for a text dataset; known: "
                          f"['limit']")
    if spec.checkpoint and not Path(spec.checkpoint).expanduser().is_dir():
        raise OptimizerError(
            f"model.checkpoint {spec.checkpoint} not found: put a Hugging Face GPT-2 checkpoint "
            f"there (config.json, model.safetensors, and tokenizer.json or vocab.json + "
            f"merges.txt), e.g. a copy of the 'gpt2' model repository; it is never downloaded")
    corpus = load_corpus(recipe.data.dataset, recipe.data.root, recipe.data.val_fraction, limit)
    if spec.checkpoint:
        tok = load_checkpoint_tokenizer(Path(spec.checkpoint).expanduser())
        tok_info = {"kind": "byte-level BPE", "source": f"checkpoint {spec.checkpoint}"}
    else:
        tok = train_tokenizer(corpus.train, spec.vocab_size)
        tok_info = {"kind": "byte-level BPE", "source": f"trained on the {corpus.name} training "
                    f"split", "vocab_size": spec.vocab_size}
    tok_info["vocab_size"] = tok.get_vocab_size()
    block = recipe.train.block_size
    if block > spec.n_positions and not spec.checkpoint:
        raise RecipeError(f"recipe: train.block_size ({block}) exceeds model.n_positions "
                          f"({spec.n_positions})")
    train, val, test = (encode_documents(tok, docs)
                        for docs in (corpus.train, corpus.validation, corpus.test))
    try:
        train_blocks, val_blocks = blocks(train, block), blocks(val, block)
    except ValueError as exc:
        raise OptimizerError(f"dataset {corpus.name}: {exc}") from None
    (runs_dir / recipe.name).mkdir(parents=True, exist_ok=True)
    info = {**corpus.info(), "tokens": {"train": len(train), "validation": len(val),
                                        "test": len(test)}, "tokenizer": tok_info}
    return TextData(tok, eos_id(tok), train_blocks, val_blocks, test, info)


def teacher_model(recipe: Recipe, data: TextData, seed: int) -> GPT2LMHeadModel:
    spec = recipe.model_config
    if spec.checkpoint:
        model = from_checkpoint(Path(spec.checkpoint).expanduser())
        if model.config.vocab_size < data.tokenizer.get_vocab_size():
            raise OptimizerError(f"checkpoint vocab ({model.config.vocab_size}) is smaller than "
                                 f"its tokenizer's ({data.tokenizer.get_vocab_size()})")
        return model
    torch.manual_seed(seed)
    return GPT2LMHeadModel(gpt2_config(spec.n_layer, spec.n_embd, spec.n_head, spec.n_positions,
                                       data.tokenizer.get_vocab_size(), data.eos, spec.dropout))


@dataclass
class Point:
    model: GPT2LMHeadModel
    techniques: list[dict]
    quantize: object | None  # QuantizeConfig when the chain ends in quantization


def derive(base: GPT2LMHeadModel, chain: tuple[dict, ...], ctx: TextContext,
           cache: dict[str, tuple]) -> Point:
    """Apply a point's passes to the baseline. PyTorch results are cached by chain prefix, so
    "distill" and "distill, quantize" train one student, not two."""
    point = Point(base, [], None)
    for i, step in enumerate(chain):
        name = step["pass"]
        cfg = make_text_config(name, {k: v for k, v in step.items() if k != "pass"})
        params = dataclasses.asdict(cfg)
        _, fn, kind = TEXT_PASSES[name]
        if kind == "onnx":
            point.quantize = cfg
        else:
            key = json.dumps(chain[:i + 1], sort_keys=True)
            if key not in cache:
                cache[key] = fn(point.model, cfg, ctx)
            point.model, info = cache[key]
            params.update(info)
        point.techniques.append({"name": name, "params": copy.deepcopy(params)})
    return point


@dataclass
class Exported:
    """A model's validated FP32 graph, opened once."""

    path: Path
    decoder: Decoder
    validation: dict
    _greedy: list[list[int]] | None = None

    def greedy(self, pairs) -> list[list[int]]:
        if self._greedy is None:
            self._greedy = ev.greedy_tokens(self.decoder, pairs)
        return self._greedy


class _Run:
    def __init__(self, recipe: Recipe, data: TextData, out: Path, provenance: dict,
                 tokenizer_file: Path):
        self.recipe, self.data, self.out = recipe, data, out
        self.provenance, self.tokenizer_file = provenance, tokenizer_file
        ev_cfg = recipe.evaluate
        self.pairs = ev.prompts_from(data.test_stream, ev_cfg.prompts, ev_cfg.prompt_tokens,
                                     ev_cfg.continuation_tokens)

    def measure(self, point: Point, workdir: Path, sample: list[int],
                exports: dict[int, "Exported"]) -> tuple[Path, dict, dict, dict]:
        """Export, validate, quantize, evaluate: (onnx path, metrics, export info, sections).

        `exports` keeps each model's validated FP32 graph (and its greedy continuations), so a
        point that only quantizes the model of another point (int8 of the baseline, say) does
        not export or decode it again.
        """
        recipe, ev_cfg = self.recipe, self.recipe.evaluate
        model = point.model.eval()
        spec = generation_spec(model, self.data.eos)
        if id(model) not in exports:
            fp32 = export_decoder(model, spec, workdir / f"fp32-{len(exports)}.onnx",
                                  recipe.export.opset)
            fdec = Decoder.open(fp32, spec)
            exports[id(model)] = Exported(fp32, fdec, validate(model, fdec, sample,
                                                                recipe.export.atol))
        fp32 = exports[id(model)]
        path, dec, export, metrics = fp32.path, fp32.decoder, dict(fp32.validation), {}
        greedy = fp32.greedy(self.pairs)
        if point.quantize is not None:
            path, report = quantize(fp32.path, point.quantize, workdir / "quantize")
            point.techniques[-1]["params"].update(report)
            dec = Decoder.open(path, spec)
            greedy = ev.greedy_tokens(dec, self.pairs)
            prompt, _ = self.pairs[0]
            if greedy[0] != dec.generate_uncached(prompt, len(greedy[0])):
                raise ExportError("the quantized graph decodes differently with and without its "
                                  "cache")
            metrics["greedy_agreement_vs_fp32"] = ev.greedy_agreement(greedy,
                                                                      fp32.greedy(self.pairs))
            export["quantized_cache_check"] = "greedy cached == uncached"
        window = ev_cfg.ppl_window or spec.context_length
        ppl = ev.perplexity(dec, self.data.test_stream, window, ev_cfg.ppl_stride or window // 2,
                            ev_cfg.ppl_max_tokens)
        gen = ev.generation_quality(dec, self.data.tokenizer.decode, self.pairs, greedy)
        sections = {"generation": generation_manifest(spec),
                    "graph": graph_manifest(spec, recipe.export.opset)}
        ram = ev.peak_ram(path, sections, ev_cfg.prompt_tokens, ev_cfg.continuation_tokens)
        params = count_parameters(model)
        metrics.update({
            "params": params, "nonzero_params": nonzero_parameters(model),
            "flops_per_token": ev.flops_per_token(model, ev_cfg.prompt_tokens),
            "file_size_bytes": path.stat().st_size, **ram,
            "perplexity": ppl["perplexity"], "bleu": gen["bleu"],
            "distinct_1": gen["distinct_1"], "distinct_2": gen["distinct_2"]})
        method = {"perplexity": {k: ppl[k] for k in ("window", "stride", "tokens_scored")},
                  "bleu_signature": gen["bleu_signature"], "prompts": gen["prompts"]}
        return path, metrics, export, {**sections, "method": method}

    def bundle(self, name: str, seed: int, point: Point, path: Path, metrics: dict, export: dict,
               sections: dict, train_technique: dict):
        quant = point.quantize
        precision = PRECISION[quant.mode] if quant else "fp32"
        techniques = [train_technique, *point.techniques,
                      {"name": "export", "params": {
                          "format": "onnx", "opset": self.recipe.export.opset,
                          "exporter": "torch.onnx.export(dynamo=True)", "kv_cache": True,
                          **export}}]
        data = self.data.info
        manifest_metrics = {
            "params": metrics["params"], "nonzero_params": metrics["nonzero_params"],
            "flops_per_token": metrics["flops_per_token"],
            "file_size_bytes": metrics["file_size_bytes"],
            "peak_ram": {k: metrics[k] for k in ("peak_rss_bytes", "model_rss_bytes")},
            "quality": {k: metrics[k] for k in ("perplexity", "bleu", "distinct_1", "distinct_2",
                                                "greedy_agreement_vs_fp32") if k in metrics},
            "quality_method": {**sections["method"],
                               "dataset": f"{data['name']} test split ({data['tokens']['test']} "
                                          f"tokens)",
                               "distinct_sampling": dataclasses.asdict(ev.SAMPLING_FOR_DISTINCT),
                               "graph": "the bundle's ONNX graph in ONNX Runtime (CPU)"},
        }
        now = datetime.now(timezone.utc)
        manifest = {
            "name": name, "task": "text-generation", "family": "gpt2", "precision": precision,
            "techniques": techniques, "graph": sections["graph"],
            "generation": sections["generation"], "metrics": manifest_metrics,
            "provenance": {**self.provenance, "seed": seed,
                           "created_at": now.isoformat(timespec="seconds"),
                           "created_unix": int(now.timestamp())},
        }
        target = self.out if name == self.recipe.name else self.out.parent / name
        return write_bundle(target, manifest, {"model.onnx": path,
                                               "tokenizer.json": self.tokenizer_file})


def gate_failures(gate: GateConfig, metrics: dict, baseline: dict) -> list[str]:
    limit = gate.max_perplexity_increase_pct
    if limit is None:
        return []
    increase = 100.0 * (metrics["perplexity"] / baseline["perplexity"] - 1.0)
    if increase > limit:
        return [f"perplexity {metrics['perplexity']:.3f} is {increase:.1f}% above the baseline's "
                f"{baseline['perplexity']:.3f} (max increase {limit:g}%)"]
    return []


def check_points(recipe: Recipe) -> None:
    """Refuse unknown passes and parameters before hours of training, not after."""
    for point in recipe.points:
        for i, step in enumerate(point.passes):
            make_text_config(step["pass"], {k: v for k, v in step.items() if k != "pass"})
            if TEXT_PASSES[step["pass"]][2] == "onnx" and i != len(point.passes) - 1:
                raise RecipeError(f"recipe: points[{point.name}]: quantize must be the last pass")


def run_text_recipe(recipe: Recipe, recipe_path: Path, out: Path | None = None,
                    runs_dir: Path = Path("runs"), progress: bool = True) -> RecipeResult:
    started = time.perf_counter()
    check_points(recipe)
    data = prepare(recipe, runs_dir)
    tokenizer_file = runs_dir / recipe.name / "tokenizer.json"
    data.tokenizer.save(str(tokenizer_file))
    provenance = run_provenance(recipe_path, data.info, recipe.profile)
    provenance["versions"].update(transformers=transformers.__version__,
                                  tokenizers=tokenizers.__version__,
                                  sacrebleu=sacrebleu.__version__)
    run = _Run(recipe, data, out or Path("bundles") / recipe.name, provenance, tokenizer_file)
    sample = data.test_stream[:256]
    tracker = Tracker(recipe.name, dataclasses.asdict(recipe), recipe.mlflow)
    ledger = Ledger(recipe, tracker, gate_failures)
    try:
        for seed in recipe.all_seeds:
            ctx = TextContext(recipe, data.train, data.val, seed, progress)
            teacher = teacher_model(recipe, data, seed)
            teacher, hist = train_lm(teacher, data.train, data.val, recipe.train, seed, progress,
                                     desc=f"teacher seed {seed}")
            save_checkpoint(teacher, runs_dir / recipe.name / f"seed{seed}" / "baseline.pt")
            train_technique = {"name": "train" if not recipe.model_config.checkpoint else
                               "finetune", "params": {
                                   "dataset": data.info["name"], **dataclasses.asdict(recipe.train),
                                   "optimizer": "Adam", "seed": seed,
                                   "from": recipe.model_config.checkpoint or "random init",
                                   **hist.info()}}
            ledger.seed()
            cache: dict = {}  # trained models by chain prefix
            exports: dict = {}  # validated FP32 graphs by model
            points = [("baseline", (), None), *((p.name, p.passes, p.gate) for p in recipe.points)]
            with tempfile.TemporaryDirectory() as seed_tmp:
                for i, (name, chain, gate) in enumerate(points):
                    point = derive(teacher, chain, ctx, cache)
                    path, metrics, export, sections = run.measure(
                        point, Path(seed_tmp) / f"point{i}", sample, exports)
                    log.info("seed %d %s: perplexity %.3f, %s params", seed, name,
                             metrics["perplexity"], f"{metrics['params']:,}")
                    bundle_name = recipe.name if name == "baseline" else f"{recipe.name}-{name}"
                    ledger.record(seed, name, gate, metrics, lambda: run.bundle(
                        bundle_name, seed, point, path, metrics, export, sections,
                        train_technique))
    except BaseException:
        tracker.finish(None, failed=True)
        raise
    ev_cfg = recipe.evaluate
    method = {"seeds": list(recipe.all_seeds), "dataset": data.info["description"],
              "perplexity": f"sliding window {ev_cfg.ppl_window or 'context'} tokens, stride "
                            f"{ev_cfg.ppl_stride or 'window/2'}, on the exported graph",
              "bleu": f"sacrebleu corpus BLEU, greedy {ev_cfg.continuation_tokens}-token "
                      f"continuations of {ev_cfg.prompts} held-out {ev_cfg.prompt_tokens}-token "
                      f"prompts",
              "distinct": "distinct-1/2 over sampled continuations (T=1, top-k 50, seed 1234)",
              "statistics": "paired t-test over seeds, 95% CI",
              "ram": "VmHWM of a fresh ONNX Runtime process generating",
              "seconds": round(time.perf_counter() - started, 1),
              "versions": run.provenance["versions"]}
    return ledger.finish(runs_dir / recipe.name, method)
