"""Torch-free on-device training of a deploy bundle with ONNX Runtime (``python -m clients.edge.train``).

Nothing here imports torch: only numpy, safetensors, ``onnxruntime.capi._pybind_state`` and the
numpy-only parts of edgecond (``edgecond.buffer``, ``edgecond.formation``). Keep this file free of
imports so that ``import clients.edge`` stays cheap.
"""
