"""Server configuration: defaults, then a YAML file, then ``EDGEGEN_*`` environment variables,
then explicit overrides (tests). Validated once at startup, so a bad config stops the boot with
one clear line instead of failing on the first request.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import yaml

ENV_PREFIX = "EDGEGEN_"
MAX_IMAGES_CAP = 256  # the most max_images_per_request may be (n latents and n images in memory)


class ConfigError(Exception):
    """The configuration cannot be used; the message says which key and why."""


@dataclass(frozen=True)
class Config:
    # Basic
    bundles: tuple[str, ...] = ()  # bundle directories to serve, each becomes one model
    host: str = "127.0.0.1"
    port: int = 8080
    # Limits
    max_images_per_request: int = 16  # cap on `n` for /v1/images/generations
    max_tokens_per_request: int = 512  # cap on `max_tokens` for /v1/completions
    max_body_bytes: int = 1 << 20  # larger request bodies get 413 (chunked ones too)
    # Slow clients: each worker's event loop (edge_app/front.py) reads a request completely
    # before a thread runs it, and writes the response, so a slow or silent client holds no
    # thread. Deadlines: the request line and headers within header_timeout_s of the
    # connection (or of a kept-alive request's first byte), then the body within
    # body_timeout_s; a response the client stops reading for send_timeout_s is dropped.
    header_timeout_s: float = 10.0
    body_timeout_s: float = 30.0
    send_timeout_s: float = 30.0
    # Runtime
    intra_op_threads: int = 0  # ONNX Runtime intra-op threads; 0 = its default (all cores)
    # Power (the paper's method): sensor backend name, "auto" or "none"; the sysfs root of power
    # and thermal sensors (tests point it at recorded trees); sampling rate; idle baseline
    # measured at startup.
    power_sensor: str = "auto"
    power_root: str = "/"
    power_hz: float = 10.0
    power_baseline_s: float = 2.0
    # Execution providers, in order of preference (ONNX Runtime names, e.g.
    # TensorrtExecutionProvider, CUDAExecutionProvider, XnnpackExecutionProvider,
    # CPUExecutionProvider); empty = every accelerator this ORT build has, then CPU. A device
    # class lists its chain in ansible/group_vars/<class>.yml.
    execution_providers: tuple[str, ...] = ()
    trt_cache_dir: str = ""  # TensorRT engine cache; "" = $XDG_CACHE_HOME/edgegen/tensorrt
    trt_fp16: bool = True  # let TensorRT build FP16 kernels (INT8 follows the bundle's precision)
    device_class: str = ""  # fleet class of this device (edgegen_device_info); "" = detected
    # Admission: at most `max_concurrent` generations run at once, `max_queue` more wait (at
    # most `queue_timeout_s`); anything beyond gets 503 with Retry-After.
    max_concurrent: int = 2
    max_queue: int = 16
    queue_timeout_s: float = 30.0
    request_timeout_s: float = 300.0  # a generation still running after this stops early
    # Auth: bearer keys for generation and admin routes (none = open, logged as a warning
    # when bound beyond loopback). /health and /ready stay public; /metrics too unless
    # metrics_auth.
    api_keys: tuple[str, ...] = ()
    api_key_file: str = ""  # one key per line (a Docker/Kubernetes secret)
    metrics_auth: bool = False
    # A client address that sends this many wrong keys within a minute gets 429 (Retry-After)
    # without its key being checked until the minute has passed; 0 = no limit.
    auth_failures_per_minute: int = 10
    # Admin (/admin/*) has its own keys, which API keys do not open (and vice versa). None
    # configured: /admin/* answers loopback clients only (plus their API key, if any).
    admin_keys: tuple[str, ...] = ()
    admin_key_file: str = ""
    # /admin/reload {"bundles": [...]} loads bundles from under this directory only (names or
    # paths inside it; symlinks may not lead out). "" = bundle lists are refused; a reload of
    # the configured bundles still works.
    bundle_root: str = ""
    reload_timeout_s: float = 120.0  # /admin/reload answers within this (the load may go on)
    # Host header names this server answers to, besides IP addresses, localhost (*.localhost)
    # and this machine's own name: a defence against DNS rebinding. "*" = any name.
    allowed_hosts: tuple[str, ...] = ()
    # Process model (gunicorn): one worker holds one copy of each model, threads share it.
    # threads 0 = max_concurrent + max_queue + 4 (so health and metrics always get a thread).
    workers: int = 1
    threads: int = 0
    timeout_s: int = 120
    graceful_timeout_s: int = 60  # SIGTERM: in-flight requests (streams too) get this long
    log_level: str = "info"
    # The companion page (/companion/): where onnxruntime-web's files are ("" = build/web-deps/
    # onnxruntime-web in this checkout, where android/fetch-web-deps.sh puts them).
    companion_ort_dir: str = ""
    extra: dict[str, Any] = field(default_factory=dict)  # unrecognised YAML keys are refused

    def __post_init__(self):
        for name in ("port", "max_images_per_request", "max_tokens_per_request", "max_body_bytes",
                     "workers", "timeout_s", "graceful_timeout_s", "max_concurrent"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ConfigError(f"config '{name}' must be a positive integer, got {value!r}")
        for name in ("threads", "max_queue", "auth_failures_per_minute"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ConfigError(f"config '{name}' must be an integer >= 0, got {value!r}")
        if self.threads and self.threads <= self.max_concurrent + self.max_queue:
            raise ConfigError(f"config 'threads' ({self.threads}) must exceed max_concurrent + "
                              f"max_queue ({self.max_concurrent + self.max_queue}): each waiting "
                              f"request holds a thread, and /health and /metrics need one free")
        for name in ("queue_timeout_s", "request_timeout_s", "header_timeout_s",
                     "body_timeout_s", "send_timeout_s", "reload_timeout_s"):
            if not _is_number(getattr(self, name)) or getattr(self, name) <= 0:
                raise ConfigError(f"config '{name}' must be a positive number of seconds, "
                                  f"got {getattr(self, name)!r}")
        for name in ("trt_fp16", "metrics_auth"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"config '{name}' must be true or false, "
                                  f"got {getattr(self, name)!r}")
        for name in ("api_keys", "admin_keys"):
            for key in getattr(self, name):
                _check_key(name, key)
        if set(self.api_keys) & set(self.admin_keys):
            raise ConfigError("config 'admin_keys' must differ from every API key (an API key "
                              "must not open /admin)")
        if self.max_images_per_request > MAX_IMAGES_CAP:
            raise ConfigError(f"config 'max_images_per_request' must be at most "
                              f"{MAX_IMAGES_CAP}, got {self.max_images_per_request}")
        for host in self.allowed_hosts:
            if not host or any(c.isspace() or c in "/@?#" for c in host):
                raise ConfigError(f"config 'allowed_hosts': {host!r} is not a host name "
                                  f"(e.g. pi-01.lan, *.lan or *)")
        if self.bundle_root and not Path(self.bundle_root).is_dir():
            raise ConfigError(f"config 'bundle_root' {self.bundle_root} is not a directory")
        if not 0 < self.port < 65536:
            raise ConfigError(f"config 'port' must be in 1..65535, got {self.port}")
        if isinstance(self.intra_op_threads, bool) or not isinstance(self.intra_op_threads, int) \
                or self.intra_op_threads < 0:
            raise ConfigError(f"config 'intra_op_threads' must be >= 0, got {self.intra_op_threads!r}")
        if not _is_number(self.power_hz) or self.power_hz <= 0:
            raise ConfigError(f"config 'power_hz' must be a positive number, got {self.power_hz!r}")
        if not _is_number(self.power_baseline_s) or self.power_baseline_s < 0:
            raise ConfigError(f"config 'power_baseline_s' must be a number >= 0 (0: no "
                              f"baseline), got {self.power_baseline_s!r}")
        if self.log_level not in ("debug", "info", "warning", "error", "critical"):
            raise ConfigError(f"config 'log_level' must be debug|info|warning|error|critical, "
                              f"got {self.log_level!r}")
        if self.extra:
            raise ConfigError(f"unknown config keys: {sorted(self.extra)}; known keys: "
                              f"{sorted(_FIELDS)}")


    @property
    def gunicorn_threads(self) -> int:
        return self.threads or self.max_concurrent + self.max_queue + 4

    def all_api_keys(self) -> tuple[str, ...]:
        """The configured keys plus those of api_key_file (read now, so a rotated secret file
        takes effect on reload)."""
        return _read_keys("api_key_file", self.api_keys, self.api_key_file)

    def all_admin_keys(self, api_keys: tuple[str, ...] | None = None) -> tuple[str, ...]:
        """admin_keys plus those of admin_key_file; none may also be an API key (`api_keys`:
        all_api_keys() when the caller has just read them, so the key file is read once)."""
        keys = _read_keys("admin_key_file", self.admin_keys, self.admin_key_file)
        if set(keys) & set(self.all_api_keys() if api_keys is None else api_keys):
            raise ConfigError("an admin key is also an API key: give /admin keys of its own")
        return keys


def _check_key(name: str, key: str) -> None:
    if len(key) < 16 or any(c.isspace() for c in key):
        raise ConfigError(f"config '{name}': each key must be at least 16 characters with no "
                          f"whitespace (e.g. `openssl rand -hex 24`)")


def _read_keys(name: str, listed: tuple[str, ...], path: str) -> tuple[str, ...]:
    keys = list(listed)
    if path:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read {name} {path}: "
                              f"{getattr(exc, 'strerror', None) or exc}") from None
        found = [line.strip() for line in text.splitlines()
                 if line.strip() and not line.lstrip().startswith("#")]
        if not found:
            raise ConfigError(f"{name} {path} holds no key")
        keys += found
    return tuple(keys)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


_FIELDS = {f.name: f for f in dataclasses.fields(Config) if f.name != "extra"}


def _coerce(name: str, value: Any) -> Any:
    """Bring a value from YAML or the environment to the field's type."""
    if _FIELDS[name].type == "tuple[str, ...]":
        if isinstance(value, str):
            value = [v for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
            what = "paths" if name == "bundles" else "strings"
            raise ConfigError(f"config '{name}' must be a list of {what}, got {value!r}")
        return tuple(v.strip() for v in value)
    if _FIELDS[name].type == "bool" and isinstance(value, str):
        words = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}
        if value.strip().lower() not in words:
            raise ConfigError(f"config '{name}' must be true or false, got {value!r}")
        return words[value.strip().lower()]
    kinds = {"int": (int, "an integer"), "float": (float, "a number")}
    if _FIELDS[name].type in kinds and isinstance(value, str):
        kind, words = kinds[_FIELDS[name].type]
        try:
            return kind(value)
        except ValueError:
            raise ConfigError(f"config '{name}' must be {words}, got {value!r}") from None
    return value


def load_config(overrides: Mapping[str, Any] | None = None, *, path: str | None = None,
                environ: Mapping[str, str] | None = None) -> Config:
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    path = path or environ.get(ENV_PREFIX + "CONFIG")
    if path:
        try:
            loaded = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        except OSError as exc:
            raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {path} is not valid YAML: {exc}") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {path} must hold a mapping of keys to values")
        values.update(loaded)
    for name in _FIELDS:
        env_value = environ.get(ENV_PREFIX + name.upper())
        if env_value is not None:
            values[name] = env_value
    values.update(overrides or {})
    known = {k: _coerce(k, v) for k, v in values.items() if k in _FIELDS}
    unknown = {k: v for k, v in values.items() if k not in _FIELDS}
    return Config(**known, extra=unknown)
