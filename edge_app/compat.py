"""Which ONNX Runtime can load a bundle: the graph's opset and the contrib ops it uses, against
the runtime a device class runs (its image's onnxruntime, a phone's onnxruntime-web).

A runtime implements every ONNX opset up to its own (ONNX Runtime's compatibility table), and a
graph stamped with a newer opset is refused at load. The optimizer records what a bundle needs
(`graph.opset`, `graph.min_onnxruntime`); a deploy refuses, per class, a bundle its runtime
cannot load (fleet/deploy.py), before anything reaches a device. Torch-free: the server, the
operator's CLI and the optimizer all read it.
"""

from __future__ import annotations

import re

# The first ONNX Runtime release implementing each ONNX opset: each ONNX release's new opset
# arrived in the next ONNX Runtime release (ONNX 1.14 / opset 19 in 1.15, ONNX 1.17 / opset 22 in
# 1.20; onnxruntime.ai/docs/reference/compatibility.html). A release between two entries
# implements the lower one's opset; an opset between two entries is looked up at the higher one
# (23 at 1.24: an upper bound, so a deploy may refuse what an older release could load, never
# let through what it cannot).
OPSET_SINCE = {11: "1.0.0", 12: "1.3.0", 13: "1.6.0", 14: "1.8.0", 15: "1.9.0", 16: "1.11.0",
               17: "1.12.0", 18: "1.14.0", 19: "1.15.0", 20: "1.17.0", 21: "1.18.0",
               22: "1.20.0", 24: "1.24.0"}
# The first ONNX Runtime release reading each ONNX IR version (the file format: ONNX 1.10 made
# 8, 1.14 made 9, 1.16 made 10; 1.15.1 refuses IR 10 whatever the opset, checked). torch's
# exporter writes IR 10 even at opset 18: the optimizer lowers it to the opset's own.
IR_SINCE = {8: "1.9.0", 9: "1.15.0", 10: "1.18.0", 11: "1.24.0"}
# Contrib ops (domain com.microsoft) the optimizer writes into graph files, and the first release
# that has them as written (MatMulNBits with accuracy_level: 1.17).
CONTRIB_SINCE = {"MatMulNBits": "1.17.0"}


class CompatError(ValueError):
    """A version string that is not one."""


def parse_version(text: str) -> tuple[int, int, int]:
    """"1.20.1" -> (1, 20, 1); a local or pre-release suffix (1.23.0+cu126, 1.24.0rc1) is
    ignored: the release it belongs to implements the same opsets."""
    m = re.match(r"\s*(\d+)\.(\d+)(?:\.(\d+))?", str(text))
    if not m:
        raise CompatError(f"not a version: {text!r}")
    return int(m.group(1)), int(m.group(2)), int(m.group(3) or 0)


def _newest(table: dict[int, str], runtime_version: str, before: int) -> int:
    """The highest key of `table` (opset or IR version -> first release) that a runtime release
    has; `before` for releases older than the table."""
    have = parse_version(runtime_version)
    return max((key for key, since in table.items() if parse_version(since) <= have),
               default=before)


def max_opset(runtime_version: str) -> int:
    """The newest ONNX opset a runtime release implements (the table's last entry for releases
    newer than the table: they implement at least that)."""
    return _newest(OPSET_SINCE, runtime_version, before=10)


def min_onnxruntime(opset: int, contrib_ops: set[str] | frozenset[str] = frozenset(),
                    ir_version: int = 0) -> str:
    """The oldest ONNX Runtime that loads a graph of this opset and IR version using these
    contrib ops."""
    newer = [since for o, since in OPSET_SINCE.items() if o >= opset]
    if not newer:
        raise CompatError(f"ONNX opset {opset} is newer than any ONNX Runtime this kit knows "
                          f"(up to opset {max(OPSET_SINCE)}): export at {max(OPSET_SINCE)}")
    needs = [min(newer, key=parse_version)]
    needs += [CONTRIB_SINCE[op] for op in contrib_ops if op in CONTRIB_SINCE]
    if ir_version > max(IR_SINCE):
        raise CompatError(f"ONNX IR version {ir_version} is newer than any ONNX Runtime this kit "
                          f"knows (up to IR {max(IR_SINCE)})")
    needs += [since for ir, since in IR_SINCE.items() if ir <= ir_version]
    return max(needs, key=parse_version)


def bundle_needs(manifest) -> str:
    """The ONNX Runtime release a bundle needs: recorded by the optimizer, or (bundles made
    before it recorded one) derived from the graph's opset."""
    graph = manifest.graph
    return graph.min_onnxruntime or min_onnxruntime(graph.opset, ir_version=graph.ir_version)


def max_ir_version(runtime_version: str) -> int:
    """The newest ONNX IR version a runtime release reads (7 before the table)."""
    return _newest(IR_SINCE, runtime_version, before=7)


def refusal(name: str, opset: int, needs: str, runtime: str, runtime_version: str,
            ir_version: int = 0, who: str = "this class") -> str | None:
    """Why a bundle cannot run on `who`'s runtime, in one line, or None when it can."""
    if parse_version(needs) <= parse_version(runtime_version):
        return None
    can, reads = max_opset(runtime_version), max_ir_version(runtime_version)
    graph = f"ONNX opset {opset}" + (f", IR {ir_version}" if ir_version else "")
    if opset > can or ir_version > reads:
        fix = f"export it at opset {min(opset, can)} for {who} (SET=export.opset={min(opset, can)})"
    else:
        fix = "rebuild it without the newer operators, or update the runtime"
    return (f"bundle {name} needs {runtime} >= {needs} ({graph}); {who} runs {runtime} "
            f"{runtime_version}, which implements opsets up to {can} (IR {reads}): {fix}")


def litert_refusal(name: str, needs: str, have: str, who: str = "this class",
                   fix: str = "install edgegen[litert]") -> str | None:
    """Why a LiteRT bundle cannot run on `who`, whose ai-edge-litert is `have` ("" = none), in
    one line, or None when it can."""
    if have and parse_version(needs) <= parse_version(have):
        return None
    if not have:
        return (f"bundle {name} is a LiteRT graph (ai-edge-litert >= {needs}); {who} has no "
                f"LiteRT: {fix}, or serve the model's ONNX bundle")
    return (f"bundle {name} needs ai-edge-litert >= {needs}; {who} runs {have}: update it, or "
            f"rebuild the bundle with that release")
