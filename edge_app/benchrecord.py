"""The schema of one benchmark result file, `<results>/<device>/<bundle>/repeat-<k>.json`: what
`python -m edge_app bench` writes on a device, what the companion page's bench mode writes on
a phone (edge_app/static/companion/bench.js), and what `python -m fleet report` reads. Both
producers are checked against it by the tests, and the phone collector (fleet/phonebench.py)
refuses a file that does not match, before it enters the results tree.

The schema is data (RECORD): a dict maps keys to the schema of their values, a type (or tuple
of types) is a leaf, `None` in a tuple allows null, `[schema]` is a list of that, and
`{EACH: schema}` a dict whose every value has that schema. Keys beyond the schema are allowed
(a producer may say more: the page's memory method, a server's traffic)."""

from __future__ import annotations

from typing import Any

EACH = "*"
NUM = (int, float)
OPT_NUM = (int, float, type(None))

LATENCY = {"n": int, "p50_s": NUM, "p95_s": NUM, "mean_s": NUM, "std_s": NUM}
# A power window: measured (power_w and energy) or not, and then why not (energy_note).
POWER = {"power_w": OPT_NUM, "energy_j": OPT_NUM}
# images_per_s null: every run shorter than the timer's resolution (a browser's is coarse)
IMAGE_WORKLOAD = {"batch": int, "latency": LATENCY, "images_per_s": OPT_NUM, "power": POWER}
TEXT_WORKLOAD = {"new_tokens": [int], "prompt_tokens": [int], "latency": LATENCY,
                 "time_to_first_token": LATENCY, "tokens_per_s_mean": OPT_NUM,
                 "tokens_per_s_std": OPT_NUM, "power": POWER}
WORKLOAD = {"runs": int, "warmup": int, "image_batches": [int], "new_tokens": int,
            "window_s": NUM, "seed": int, "threads": int, "prompts": [str]}
METHOD = {"tool": str, "workload": WORKLOAD, "repeats": int,
          "power": {"sensor": (str, type(None))}, "latency": str, "peak_rss": str,
          "runtime": {"onnxruntime": str}, "cpu": {"model": str, "arch": str,
                                                   "logical_cpus": (int, type(None))}}
MANIFEST_FACTS = {"name": str, "task": str, "family": str, "precision": str,
                  "techniques": [str], "metrics": dict, "model_sha256": str,
                  "recipe": {"path": (str, type(None)), "sha256": (str, type(None))}}
RECORD = {"device": str, "device_class": str, "repeat": int, "bundle_dir": str,
          "manifest_sha256": str, "manifest": MANIFEST_FACTS, "bundle": str, "task": str,
          "runtime": str, "providers": [str], "workloads": {EACH: dict},
          "memory": {"peak_rss_bytes": OPT_NUM, "rss_before_load_bytes": OPT_NUM},
          "method": METHOD, "measured_at": str}


class RecordError(ValueError):
    """A result file that does not match the schema; the message lists every mismatch."""


def _check(value: Any, schema: Any, where: str, errors: list[str]) -> None:
    if isinstance(schema, dict):
        if not isinstance(value, dict):
            errors.append(f"{where}: expected an object, got {type(value).__name__}")
            return
        if EACH in schema:
            for key, item in value.items():
                _check(item, schema[EACH], f"{where}.{key}", errors)
            return
        for key, sub in schema.items():
            if key not in value:
                errors.append(f"{where}.{key}: missing")
            else:
                _check(value[key], sub, f"{where}.{key}", errors)
    elif isinstance(schema, list):
        if not isinstance(value, list):
            errors.append(f"{where}: expected a list, got {type(value).__name__}")
            return
        for i, item in enumerate(value):
            _check(item, schema[0], f"{where}[{i}]", errors)
    else:
        types = schema if isinstance(schema, tuple) else (schema,)
        # bool is an int to Python, never a number or a count here
        if isinstance(value, bool) and bool not in types or not isinstance(value, types):
            names = "/".join("null" if t is type(None) else t.__name__ for t in types)
            errors.append(f"{where}: expected {names}, got {type(value).__name__} {value!r:.60}")


def check_record(record: Any, origin: str = "result") -> None:
    """Raise RecordError naming every field of `record` that does not match RECORD, the
    workloads checked by the bundle's task."""
    errors: list[str] = []
    _check(record, RECORD, "record", errors)
    if isinstance(record, dict) and isinstance(record.get("workloads"), dict) \
            and isinstance(record.get("repeat"), int):
        task = record.get("task")
        shape = TEXT_WORKLOAD if task == "text-generation" else IMAGE_WORKLOAD
        if task not in ("text-generation", "image-generation"):
            errors.append(f"record.task: unknown task {task!r}")
        if not record["workloads"]:
            errors.append("record.workloads: empty")
        for name, workload in record["workloads"].items():
            _check(workload, shape, f"record.workloads.{name}", errors)
            power = workload.get("power", {})
            if isinstance(power, dict) and power.get("power_w") is None \
                    and not power.get("energy_note"):
                errors.append(f"record.workloads.{name}.power: no power_w and no energy_note "
                              f"saying why")
        if record["repeat"] < 1:
            errors.append("record.repeat: must be >= 1")
    if errors:
        raise RecordError(f"{origin} does not match the benchmark record schema "
                          f"(edge_app/benchrecord.py): " + "; ".join(errors))
