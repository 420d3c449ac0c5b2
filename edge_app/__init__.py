"""EdgeGen's device side: validates artifact bundles and serves offline generation over HTTP.

Torch-free by design (a Raspberry Pi image must stay small): it imports ONNX Runtime, Flask,
numpy and prometheus-client, never torch, transformers, `optimizer` or `fleet`.
"""

__version__ = "0.1.0"


def create_app(config=None, config_loader=None):
    """See edge_app.app.create_app (imported lazily so `edge_app.bundle` stays light)."""
    from .app import create_app as _create_app

    return _create_app(config, config_loader)
