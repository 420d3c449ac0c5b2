"""What the decoder families (GPT-2, the Llama family) share: the corpus and tokenizer, the
teacher trained or fine-tuned per seed, the KV-cache export and its checks, quality measured on
the graph that ships, the perplexity gate and the bundle's sections.

A subclass says what differs (families/gpt2.py, families/llama.py): how a model is built from
the recipe's shape or loaded from a checkpoint, its per-layer layout, and the hooks that head
pruning, MLP pruning and distillation call.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import sacrebleu
import tokenizers
import torch
import transformers
from torch import nn

from edge_app.generation import TextGeneration
from edge_app.textgen import Decoder

from ..errors import OptimizerError, RecipeError
from ..export import run_checks
from ..graphs import graph_needs
from ..models.dcgan import count_parameters
from ..text import calibrate
from ..text import evaluate as ev
from ..text.data import TextData, Vocabulary, prepare
from ..text.export import (CHECKS, DECODER, GraphProbe, Layout, export_decoder,
                           generation_manifest, generation_spec, graph_manifest, validate)
from ..text.train import train_lm
from .base import Context, Exported, Family, Subject


def nonzero_parameters(model: nn.Module) -> int:
    return sum(int((p != 0).sum()) for p in model.parameters())


class DecoderFamily(Family):
    task = "text-generation"
    quantize_modes = ("dynamic-int8", "static-int8", "fp16")
    quantize_per_channel = False  # per-tensor was 1.3x faster than per-channel at batch 1
    spec = DECODER
    layers_attr: str  # state-dict prefix of the blocks: "transformer.h", "model.layers"

    # ---------------------------------------------------------------- what subclasses define
    def new_model(self, shape, vocab_size: int, data: TextData):
        """A randomly initialised model of the recipe's (or a student's) shape."""
        raise NotImplementedError

    def load_pretrained(self, path: Path):
        raise NotImplementedError

    def layout(self, model) -> Layout:
        raise NotImplementedError

    def shape_of(self, model) -> dict:
        """Per-layer facts a checkpoint needs to rebuild a pruned model (heads, MLP widths)."""
        raise NotImplementedError

    def reshape(self, model, shape: dict) -> None:
        """Give a freshly built model the per-layer shape of `shape_of` (before loading)."""
        raise NotImplementedError

    def build(self, config: dict):
        """A model from its transformers config (as `config.to_dict()` wrote it)."""
        raise NotImplementedError

    def vocabulary(self, spec) -> Vocabulary:
        """The special tokens, end tokens and chat template of a tokenizer trained here."""
        return Vocabulary()

    # ---------------------------------------------------------------- data and models
    def prepare(self, recipe, runs_dir: Path) -> TextData:
        data = prepare(recipe, runs_dir, self.vocabulary(recipe.model_config))
        ev_cfg = recipe.evaluate
        data.pairs = ev.prompts_from(data.test_stream, ev_cfg.prompts, ev_cfg.prompt_tokens,
                                     ev_cfg.continuation_tokens)
        return data

    def versions(self) -> dict[str, str]:
        return {"transformers": transformers.__version__, "tokenizers": tokenizers.__version__,
                "sacrebleu": sacrebleu.__version__}

    def teacher(self, ctx: Context):
        data, spec = ctx.data, ctx.recipe.model_config
        if data.checkpoint is not None:
            model = self.load_pretrained(data.checkpoint)
            if model.config.vocab_size < data.tokenizer.get_vocab_size():
                raise OptimizerError(f"checkpoint vocab ({model.config.vocab_size}) is smaller "
                                     f"than its tokenizer's ({data.tokenizer.get_vocab_size()})")
            return model
        torch.manual_seed(ctx.seed)
        return self.new_model(spec, data.tokenizer.get_vocab_size(), data)

    def baseline(self, ctx: Context):
        recipe = ctx.recipe
        teacher, hist = train_lm(self.teacher(ctx), ctx.data.train, ctx.data.val, recipe.train,
                                 ctx.seed, ctx.progress, desc=f"teacher seed {ctx.seed}")
        checkpoint = recipe.model_config.checkpoint
        return teacher, {"dataset": ctx.data.info["name"], **dataclasses.asdict(recipe.train),
                         "optimizer": "Adam", "seed": ctx.seed,
                         "from": checkpoint or "random init", **hist.info()}

    def train_name(self, recipe) -> str:
        if not recipe.model_config.checkpoint:
            return "train"
        return "finetune" if recipe.train.epochs else "pretrained"  # a checkpoint as published

    def save_checkpoint(self, model, path: Path, extra: dict | None = None) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"family": self.name, "config": model.config.to_dict(),
                    "shape": self.shape_of(model), "state_dict": model.state_dict(),
                    **(extra or {})}, path)

    def load_checkpoint(self, path: Path):
        ckpt = torch.load(path, map_location="cpu", weights_only=True)  # nothing is unpickled
        model = self.build(ckpt["config"])
        self.reshape(model, ckpt["shape"])
        model.load_state_dict(ckpt["state_dict"])
        return model.eval()

    def finetune(self, model, ctx: Context, epochs: int):
        model, hist = train_lm(model, ctx.data.train, ctx.data.val, ctx.recipe.train, ctx.seed,
                               ctx.progress, epochs=epochs, desc="finetune")
        return model, hist.info()

    def blocks(self, model) -> nn.ModuleList:
        return model.get_submodule(self.layers_attr)

    def magnitude_layers(self, model) -> tuple[list[nn.Module], str]:
        """Attention and MLP projections of every block; not the embeddings / tied output."""
        layers = [m for m in self.blocks(model).modules()
                  if getattr(m, "weight", None) is not None and m.weight.dim() == 2]
        return layers, "transformer block matrices (attention + MLP)"

    # ---------------------------------------------------------------- graphs
    def generation(self, model, data: TextData) -> TextGeneration:
        return generation_spec(self.layout(model), data.eos_ids, data.bos_id,
                               chat_template=data.chat_template,
                               special_tokens=data.special_tokens)

    def export(self, model, path: Path, ctx: Context) -> Exported:
        spec = self.generation(model.eval(), ctx.data)
        cfg = ctx.recipe.export
        export_decoder(model, self.layout(model), path, cfg.opset or self.spec.opset)
        dec = Decoder.open(path, spec)
        validation = validate(model, dec, ctx.data.test_stream[:256], cfg.atol or self.spec.atol,
                              graph=path.name)
        exported = Exported(path, validation, {"spec": spec, "decoder": dec})
        exported.memo["greedy", path] = ev.greedy_tokens(dec, ctx.data.pairs)
        return exported

    def check_graph(self, subject: Subject, reference: Exported, ctx: Context) -> dict:
        dec = Decoder.open(subject.graph, reference.memo["spec"])
        greedy = ev.greedy_tokens(dec, ctx.data.pairs)
        reference.memo["greedy", subject.graph] = greedy
        reference.memo["decoder", subject.graph] = dec
        probe = GraphProbe(dec, ctx.data.pairs[0][0], greedy[0])
        return run_checks(self.spec.graph_checks, CHECKS, probe, subject.graph.name)

    def calibration(self, subject: Subject, cfg, ctx: Context):
        """Windows of the validation split, each a prefill of the evaluation's prompt length
        then its continuation length in cached decode steps (optimizer/text/calibrate.py)."""
        ev_cfg = ctx.recipe.evaluate
        spec = self.generation(subject.model.eval(), ctx.data)
        return calibrate.calibration(subject.graph, spec, ctx.data.val, cfg.calibration_samples,
                                     cfg.calibration_seed, ev_cfg.prompt_tokens,
                                     ev_cfg.continuation_tokens)

    def static_int8_nodes(self, prepared, cfg) -> tuple[dict, dict]:
        return calibrate.quantized_nodes(prepared, cfg.keep_head)

    # ---------------------------------------------------------------- results
    def evaluate(self, subject: Subject, reference: Exported, ctx: Context) -> tuple[dict, dict]:
        data, ev_cfg = ctx.data, ctx.recipe.evaluate
        model, path, spec = subject.model.eval(), subject.graph, reference.memo["spec"]
        derived = path != reference.path
        dec = reference.memo["decoder", path] if derived else reference.memo["decoder"]
        greedy = reference.memo["greedy", path]
        metrics = {}
        if derived:
            metrics["greedy_agreement_vs_fp32"] = ev.greedy_agreement(
                greedy, reference.memo["greedy", reference.path])
        window = ev_cfg.ppl_window or spec.context_length
        scored = [data.eval_stream, data.test_stream] if data.eval_stream else [data.test_stream]
        ppl, *own = [ev.perplexity(dec, stream, window, ev_cfg.ppl_stride or window // 2,
                                   ev_cfg.ppl_max_tokens) for stream in scored]
        gen = ev.generation_quality(dec, data.tokenizer.decode, data.pairs, greedy)
        sections = {"generation": generation_manifest(spec),
                    "graph": graph_manifest(spec, graph_needs(path))}
        ram = ev.peak_ram(path, sections, ev_cfg.prompt_tokens, ev_cfg.continuation_tokens)
        metrics.update({
            "params": count_parameters(model), "nonzero_params": nonzero_parameters(model),
            "flops_per_token": ev.flops_per_token(model, ev_cfg.prompt_tokens),
            "file_size_bytes": path.stat().st_size + _external_size(path), **ram,
            "perplexity": ppl["perplexity"], "bleu": gen["bleu"],
            "distinct_1": gen["distinct_1"], "distinct_2": gen["distinct_2"]})
        method = {"perplexity": {k: ppl[k] for k in ("window", "stride", "tokens_scored")},
                  "bleu_signature": gen["bleu_signature"], "prompts": gen["prompts"]}
        if own:  # cross-corpus: the training corpus's own test perplexity beside it
            metrics["perplexity_in_domain"] = own[0]["perplexity"]
            method["perplexity_in_domain"] = {k: own[0][k] for k in ("window", "stride",
                                                                     "tokens_scored")}
        return metrics, {**sections, "method": method}

    def gate(self, gate, metrics: dict, baseline: dict) -> list[str]:
        limit = gate.max_perplexity_increase_pct
        if limit is None:
            return []
        increase = 100.0 * (metrics["perplexity"] / baseline["perplexity"] - 1.0)
        if increase > limit:
            return [f"perplexity {metrics['perplexity']:.3f} is {increase:.1f}% above the "
                    f"baseline's {baseline['perplexity']:.3f} (max increase {limit:g}%)"]
        return []

    def manifest(self, subject: Subject, metrics: dict, sections: dict, ctx: Context) -> dict:
        info = ctx.data.info
        own_split = f"{info['name']} test split ({info['tokens']['test']} tokens)"
        return {
            "graph": sections["graph"], "generation": sections["generation"],
            "metrics": {
                "params": metrics["params"], "nonzero_params": metrics["nonzero_params"],
                "flops_per_token": metrics["flops_per_token"],
                "file_size_bytes": metrics["file_size_bytes"],
                "peak_ram": {k: metrics[k] for k in ("peak_rss_bytes", "model_rss_bytes")},
                "quality": {k: metrics[k] for k in ("perplexity", "perplexity_in_domain",
                                                    "bleu", "distinct_1", "distinct_2",
                                                    "greedy_agreement_vs_fp32")
                            if k in metrics},
                "quality_method": {**sections["method"],
                                   "dataset": ctx.data.eval_name or own_split,
                                   **({"dataset_in_domain": own_split, "bleu_dataset": own_split}
                                      if ctx.data.eval_name else {}),
                                   "distinct_sampling": dataclasses.asdict(ev.SAMPLING_FOR_DISTINCT),
                                   "graph": "the bundle's ONNX graph in ONNX Runtime (CPU)"},
            },
        }

    def files(self, subject: Subject, ctx: Context) -> dict[str, Path]:
        files = {"model.onnx": subject.graph, "tokenizer.json": ctx.data.tokenizer_file}
        data = subject.graph.with_name(subject.graph.name + ".data")
        if data.is_file():  # external weights of a graph over protobuf's 2 GiB
            files["model.onnx.data"] = data
        return files

    def method(self, recipe, data: TextData) -> dict:
        ev_cfg = recipe.evaluate
        other = data.info.get("evaluation_corpus")
        return {"dataset": data.info["description"],
                **({"perplexity_dataset": f"{other['description']}: test split, tokenized with "
                                          f"the model's tokenizer (cross-corpus); "
                                          f"perplexity_in_domain is the training corpus's"}
                   if other else {}),
                "perplexity": f"sliding window {ev_cfg.ppl_window or 'context'} tokens, stride "
                              f"{ev_cfg.ppl_stride or 'window/2'}, on the exported graph",
                "bleu": f"sacrebleu corpus BLEU, greedy {ev_cfg.continuation_tokens}-token "
                        f"continuations of {ev_cfg.prompts} held-out {ev_cfg.prompt_tokens}-token "
                        f"prompts",
                "distinct": "distinct-1/2 over sampled continuations (T=1, top-k 50, seed 1234)",
                "ram": "VmHWM of a fresh ONNX Runtime process generating"}

    # ---------------------------------------------------------------- distillation
    def student(self, teacher, shape: dict, init_every: int | None, ctx: Context):
        """A smaller model of the family: the recipe's `student` shape, the teacher's vocabulary
        and context; initialised at random (seed + 1: the same for every alpha), or from every
        k-th teacher layer (with the teacher's embeddings and final norm)."""
        base = self.student_shape(teacher)
        unknown = sorted(set(shape) - set(base))
        if unknown:
            raise RecipeError(f"pass 'distill': unknown student key(s) {unknown} for family "
                              f"{self.name!r}; known: {sorted(base)}")
        torch.manual_seed(ctx.seed + 1)
        student = self.new_student(teacher, {**base, **shape})
        if init_every:
            copy_every_kth_layer(teacher, student, init_every, self.layers_attr)
        return student

    def student_shape(self, teacher) -> dict:
        raise NotImplementedError

    def new_student(self, teacher, shape: dict):
        raise NotImplementedError


def _external_size(path: Path) -> int:
    data = path.with_name(path.name + ".data")
    return data.stat().st_size if data.is_file() else 0


def copy_every_kth_layer(teacher, student, k: int, prefix: str) -> None:
    """Student layer i <- teacher layer i*k; every other tensor (embeddings, final norm, head)
    copied by name. Shapes must match: the student keeps the teacher's widths."""
    t_state, s_state = teacher.state_dict(), student.state_dict()
    layers = len(student.get_submodule(prefix))
    if (layers - 1) * k >= len(teacher.get_submodule(prefix)):
        raise RecipeError(f"pass 'distill': init_every {k} needs a teacher with at least "
                          f"{(layers - 1) * k + 1} layers for a {layers}-layer student")
    new = {}
    for key, value in s_state.items():
        source = key
        if key.startswith(prefix + "."):
            i, rest = key[len(prefix) + 1:].split(".", 1)
            source = f"{prefix}.{int(i) * k}.{rest}"
        if source not in t_state or t_state[source].shape != value.shape:
            raise RecipeError(f"pass 'distill': init_every needs the student's widths to equal "
                              f"the teacher's; {key} has shape {list(value.shape)}, teacher "
                              f"{source} {list(t_state[source].shape) if source in t_state else 'none'}")
        new[key] = t_state[source].clone()
    student.load_state_dict(new)
