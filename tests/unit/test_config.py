"""Server configuration: layering (defaults < YAML < env < overrides) and startup validation."""

from __future__ import annotations

import pytest

from edge_app.config import ConfigError, load_config


def test_layering(tmp_path):
    path = tmp_path / "edge.yaml"
    path.write_text("port: 9000\nthreads: 3\nmax_queue: 0\nbundles: [a, b]\n")
    env = {"EDGEGEN_PORT": "9100", "EDGEGEN_BUNDLES": "x,y", "EDGEGEN_METRICS_AUTH": "yes",
           "EDGEGEN_EXECUTION_PROVIDERS": "CUDAExecutionProvider, CPUExecutionProvider"}
    cfg = load_config({"threads": 8}, path=str(path), environ=env)
    assert (cfg.port, cfg.threads, cfg.bundles) == (9100, 8, ("x", "y"))
    assert cfg.metrics_auth is True and cfg.max_queue == 0
    assert cfg.execution_providers == ("CUDAExecutionProvider", "CPUExecutionProvider")
    assert load_config(environ={}).gunicorn_threads == 2 + 16 + 4  # slots + queue + spare
    assert load_config(environ={}).host == "127.0.0.1"
    assert load_config(environ={"EDGEGEN_POWER_HZ": "5"}).power_hz == 5.0
    assert load_config(environ={"EDGEGEN_CONFIG": str(path)}).bundles == ("a", "b")


@pytest.mark.parametrize("overrides, env, message", [
    ({"port": 0}, {}, "'port' must be a positive integer"),
    ({"port": 70000}, {}, "'port' must be in 1..65535"),
    ({}, {"EDGEGEN_PORT": "http"}, "'port' must be an integer, got 'http'"),
    ({"threads": True}, {}, "'threads' must be an integer >= 0"),
    ({"threads": 10}, {}, r"'threads' \(10\) must exceed max_concurrent \+ max_queue \(18\)"),
    ({"max_concurrent": 0}, {}, "'max_concurrent' must be a positive integer"),
    ({"queue_timeout_s": -1}, {}, "'queue_timeout_s' must be a positive number"),
    ({}, {"EDGEGEN_METRICS_AUTH": "maybe"}, "'metrics_auth' must be true or false"),
    ({"api_keys": ["short"]}, {}, "each key must be at least 16 characters"),
    ({"api_keys": "k" * 20 + ",x y" + "z" * 16}, {}, "no whitespace"),
    ({"log_level": "loud"}, {}, "'log_level' must be"),
    ({}, {"EDGEGEN_POWER_HZ": "fast"}, "'power_hz' must be a number, got 'fast'"),
    ({"power_hz": 0}, {}, "'power_hz' must be a positive number"),
    ({"bundles": 5}, {}, "'bundles' must be a list of paths"),
    ({"max_images": 4}, {}, r"unknown config keys: \['max_images'\]"),
    ({"header_timeout_s": 0}, {}, "'header_timeout_s' must be a positive number of seconds"),
    ({}, {"EDGEGEN_BODY_TIMEOUT_S": "slow"}, "'body_timeout_s' must be a number"),
    ({"auth_failures_per_minute": -1}, {}, "'auth_failures_per_minute' must be an integer >= 0"),
    ({"admin_keys": ["short"]}, {}, "'admin_keys': each key must be at least 16 characters"),
    ({"admin_keys": ["k" * 20], "api_keys": ["k" * 20]}, {}, "must differ from every API key"),
    ({"allowed_hosts": ["a b"]}, {}, "'allowed_hosts': 'a b' is not a host name"),
    ({"bundle_root": "/nonexistent/bundles"}, {}, "'bundle_root' /nonexistent/bundles is not a "
                                                  "directory"),
    ({"max_images_per_request": 1000}, {}, "'max_images_per_request' must be at most 256"),
])
def test_bad_config_stops_the_boot(overrides, env, message):
    with pytest.raises(ConfigError, match=message):
        load_config(overrides, environ=env)


def test_bad_config_file(tmp_path):
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(path=str(tmp_path / "missing.yaml"), environ={})
    path = tmp_path / "list.yaml"
    path.write_text("- 1\n")
    with pytest.raises(ConfigError, match="must hold a mapping"):
        load_config(path=str(path), environ={})
