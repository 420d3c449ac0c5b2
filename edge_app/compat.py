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

# The first ONNX Runtime release implementing each ONNX opset (onnxruntime.ai/docs/reference/
# compatibility.html). A release between two entries implements the lower one's opset; an opset
# between two entries is looked up at the higher one (22 and 23 at 1.24: an upper bound, so a
# deploy may refuse what 1.22 could load, never let through what it cannot).
OPSET_SINCE = {11: "1.0.0", 12: "1.3.0", 13: "1.6.0", 14: "1.8.0", 15: "1.9.0", 16: "1.11.0",
               17: "1.12.0", 18: "1.14.0", 19: "1.16.0", 20: "1.17.0", 21: "1.20.0",
               24: "1.24.0"}
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


def max_opset(runtime_version: str) -> int:
    """The newest ONNX opset a runtime release implements (the table's last entry for releases
    newer than the table: they implement at least that)."""
    have = parse_version(runtime_version)
    known = [opset for opset, since in OPSET_SINCE.items() if parse_version(since) <= have]
    return max(known, default=10)


def min_onnxruntime(opset: int, contrib_ops: set[str] | frozenset[str] = frozenset()) -> str:
    """The oldest ONNX Runtime that loads a graph of this opset using these contrib ops."""
    newer = [since for o, since in OPSET_SINCE.items() if o >= opset]
    if not newer:
        raise CompatError(f"ONNX opset {opset} is newer than any ONNX Runtime this kit knows "
                          f"(up to opset {max(OPSET_SINCE)}): export at {max(OPSET_SINCE)}")
    needs = [min(newer, key=parse_version)]
    needs += [CONTRIB_SINCE[op] for op in contrib_ops if op in CONTRIB_SINCE]
    return max(needs, key=parse_version)


def bundle_needs(manifest) -> str:
    """The ONNX Runtime release a bundle needs: recorded by the optimizer, or (bundles made
    before it recorded one) derived from the graph's opset."""
    return manifest.graph.min_onnxruntime or min_onnxruntime(manifest.graph.opset)


def refusal(name: str, opset: int, needs: str, runtime: str, runtime_version: str) -> str | None:
    """Why a bundle cannot run on a runtime, in one line, or None when it can."""
    if parse_version(needs) <= parse_version(runtime_version):
        return None
    can = max_opset(runtime_version)
    fix = (f"export it at opset {can} for this class (SET=export.opset={can})"
           if opset > can else "rebuild it without the newer operators, or update the runtime")
    return (f"bundle {name} needs {runtime} >= {needs} (ONNX opset {opset}); this class runs "
            f"{runtime} {runtime_version}, which implements opsets up to {can}: {fix}")
