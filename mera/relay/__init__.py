"""TVM-style spelling of the frontends, so MERA scripts run with their import
lines changed to ``from mera import relay``: ``relay.frontend.from_pytorch``, ``relay.frontend.from_onnx``,
``relay.frontend.from_tflite``; and ``from mera.relay import ec``, the pre-2021 name of the compiler (``mera.ec``)."""

from .. import ec, frontend

__all__ = ["ec", "frontend"]
