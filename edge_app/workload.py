"""The benchmark workload (what `python -m edge_app bench` runs on each bundle) and its
command-line options, shared by `python -m edge_app bench` on a device and `python -m fleet
bench` on the controller, which checks them before it touches a device and passes them on."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field

from .config import ConfigError

# A fixed prompt set: plain English of the kind the quick text models were trained on.
PROMPTS = ("The while statement is used for repeated execution",
           "A function definition defines a user-defined function object",
           "The import statement is executed in two steps",
           "Exceptions are raised by the raise statement")


@dataclass(frozen=True)
class Workload:
    runs: int = 20
    warmup: int = 3
    image_batches: tuple[int, ...] = (1, 8)
    new_tokens: int = 128
    window_s: float = 60.0  # power window per workload (0: no power measurement)
    seed: int = 0
    threads: int = 0  # ONNX Runtime intra-op threads (0: its default)
    prompts: tuple[str, ...] = field(default=PROMPTS)

    @classmethod
    def from_dict(cls, d: dict) -> Workload:
        """The Workload of its asdict() form (JSON lists back to tuples)."""
        return cls(**{**d, "image_batches": tuple(d["image_batches"]),
                      "prompts": tuple(d["prompts"])})


def add_workload_args(p: argparse.ArgumentParser) -> None:
    """The workload options, shared with `python -m fleet bench` (which passes them on)."""
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--runs", type=int, default=Workload.runs)
    p.add_argument("--warmup", type=int, default=Workload.warmup)
    p.add_argument("--batches", default="1,8", help="image batch sizes (default 1,8)")
    p.add_argument("--new-tokens", type=int, default=Workload.new_tokens)
    p.add_argument("--window", type=float, default=Workload.window_s,
                   help="power window per workload in seconds (paper: 60; 0: none)")
    p.add_argument("--baseline", type=float, default=10.0, help="idle baseline seconds")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--seed", type=int, default=0)


WORKLOAD_OPTIONS = ("repeats", "runs", "warmup", "batches", "new_tokens", "window", "baseline",
                    "threads", "seed")


def workload_from_args(args: argparse.Namespace) -> Workload:
    """The Workload of parsed add_workload_args options; ConfigError for bad values."""
    try:
        batches = tuple(int(b) for b in args.batches.split(",") if b.strip())
    except ValueError:
        raise ConfigError(f"--batches: expected sizes like 1,8, got {args.batches!r}") from None
    for name in ("repeats", "runs"):
        if getattr(args, name) < 1:
            raise ConfigError(f"--{name} must be at least 1")
    if not batches or min(batches) < 1 or args.new_tokens < 1 or args.warmup < 0 \
            or args.window < 0 or args.baseline < 0 or args.threads < 0:
        raise ConfigError("--batches, --new-tokens must be >= 1; --warmup, --window, "
                          "--baseline, --threads >= 0")
    return Workload(runs=args.runs, warmup=args.warmup, image_batches=batches,
                    new_tokens=args.new_tokens, window_s=args.window, seed=args.seed,
                    threads=args.threads)


def workload_argv(args: argparse.Namespace) -> list[str]:
    """The add_workload_args options of `args` as command-line arguments again."""
    out = []
    for name in WORKLOAD_OPTIONS:
        out += [f"--{name.replace('_', '-')}", str(getattr(args, name))]
    return out
