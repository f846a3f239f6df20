"""TVM-style spelling of the frontends, so MERA scripts run with their import
lines changed to ``from mera import relay``: ``relay.frontend.from_pytorch``, ``relay.frontend.from_onnx``, ``relay.frontend.from_tflite``."""

from .. import frontend

__all__ = ["frontend"]
