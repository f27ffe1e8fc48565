"""Shared test settings: small thread counts keep the suite predictable on 2-core CI."""
from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = str(Path(__file__).resolve().parents[1])
if ROOT not in sys.path:  # benchmark protocols (benchmarks/subset_protocol.py) import as benchmarks.*
    sys.path.insert(0, ROOT)

os.environ.setdefault("OMP_NUM_THREADS", "2")
os.environ.setdefault("FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION", "1")
# observers (EDC's teachers) trained by tests are cached in a throw-away folder, never in ~/.cache
os.environ["EDGECOND_CACHE"] = tempfile.mkdtemp(prefix="edgecond-test-cache-")


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Tests use tiny tensors: one intra-op thread is faster and immune to a busy machine.

    Restores the caller's setting afterwards. torch is imported only by tests that use it.
    """
    torch = sys.modules.get("torch")
    if torch is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
