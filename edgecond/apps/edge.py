"""The torch-free edge trainer (``python -m clients.edge.train BUNDLE``) under ``edgecond.apps``.

Needs only the core install (numpy, safetensors, onnxruntime-training-cpu)."""
from clients.edge.train import *  # noqa: F401,F403
from clients.edge.train import __all__, main, train_bundle  # noqa: F401

if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
