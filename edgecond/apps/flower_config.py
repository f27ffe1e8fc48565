"""The federated apps' run configuration (``[tool.flwr.app.config]``, kebab-case keys).

:class:`FederatedConfig` is the one place its defaults live; ``pyproject.toml``'s
``[tool.flwr.app.config]`` and ``docs/federated.md`` repeat them, and
``tests/test_house.py`` checks that they agree. Torch-free and Flower-free.
"""
from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import Any, Mapping

from ..budget import parse_trace
from ..errors import FederatedError

__all__ = ["FederatedConfig", "RUN_CONFIG_DEFAULTS", "BUFFER_MODES", "config_from_run_config", "parse_faults"]

log = logging.getLogger("edgecond.federated")

BUFFER_MODES = ("mix", "warmup", "off")


@dataclass
class FederatedConfig:
    """Resolved run configuration of the federated apps (``[tool.flwr.app.config]``).

    Every field maps to the kebab-case key of the same name (``num_server_rounds`` ↔
    ``num-server-rounds``). These defaults are the ones ``pyproject.toml`` and
    ``docs/federated.md`` state (a test compares them).
    """

    num_server_rounds: int = 5
    #: the multisize buffer the server ships; condensed at start-up when the file is missing
    buffer_path: str = "runs/federated/digits-buffer.safetensors"
    dataset: str = "digits"
    #: used only when ``buffer_path`` is missing (see ``servers/condense_job.py``)
    condense_method: str = "idc"
    condense_preset: str = "quick"
    condense_ipc: int = 10
    condense_hooks: str = "mdc"
    model: str = "convnet"
    model_width: int = 32
    #: fedavg | fedavgm | fedprox | fedadam | fedyogi | fedadagrad | fedmedian | fedtrimmedavg
    strategy: str = "fedavg"
    proximal_mu: float = 0.01
    #: mix: train on local + condensed; warmup: condensed epochs first, then local; off: never ship
    buffer_mode: str = "mix"
    #: mix mode: loss = (1 - w) * CE(local batch) + w * CE(condensed batch), w = condensed-weight
    condensed_weight: float = 0.5
    warmup_epochs: int = 1
    #: "constant:4kB" | "lognormal:median=4kB,sigma=0.5,seed=0" | "csv:PATH"
    budget_trace: str = "lognormal:median=4kB,sigma=0.5,seed=0"
    #: device memory per (client, round) for the held prefix, same spec as budget-trace;
    #: "" = unlimited. A node's --node-config 'memory-trace=...' overrides it.
    memory_trace: str = ""
    #: budgets above this (bytes, or a size string) are rejected as oversized replies
    max_budget_bytes: str = "1GB"
    fraction_train: float = 1.0
    fraction_evaluate: float = 1.0
    min_train_nodes: int = 2
    min_evaluate_nodes: int = 2
    min_available_nodes: int = 2
    local_epochs: int = 1
    lr: float = 0.05
    batch_size: int = 32
    #: fraction of the training set held by the server only (it condenses from it); the
    #: clients partition the rest. 0 = the server condenses the clients' data (not federated).
    server_fraction: float = 0.2
    #: "dirichlet" (non-IID, ``dirichlet-alpha``) or "iid"
    partitioner: str = "dirichlet"
    dirichlet_alpha: float = 0.1
    num_partitions: int = 10
    seed: int = 0
    #: seconds the server waits for replies to a query / train / evaluate round
    query_timeout: float = 120.0
    round_timeout: float = 600.0
    output_dir: str = "runs/federated"
    device: str = "cpu"
    #: fault injection for tests/demos: "PARTITION:ROUND,..." clients that raise in that round
    fault_crash: str = ""

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def validate(self) -> "FederatedConfig":
        if self.buffer_mode not in BUFFER_MODES:
            raise FederatedError(
                f"buffer-mode {self.buffer_mode!r} is not supported; expected one of "
                f"{', '.join(BUFFER_MODES)}. Set buffer-mode in [tool.flwr.app.config] "
                "or pass --run-config 'buffer-mode=\"mix\"'."
            )
        if self.partitioner not in ("dirichlet", "iid"):
            raise FederatedError(
                f"partitioner {self.partitioner!r} is not supported; expected 'dirichlet' or "
                "'iid'. Fix partitioner in [tool.flwr.app.config]."
            )
        for name in ("num_server_rounds", "num_partitions", "local_epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise FederatedError(
                    f"{name.replace('_', '-')} = {getattr(self, name)} must be >= 1. "
                    "Fix it in [tool.flwr.app.config] or --run-config."
                )
        for name in ("fraction_train", "fraction_evaluate"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise FederatedError(
                    f"{name.replace('_', '-')} = {v} must be within [0, 1]. "
                    "Fix it in [tool.flwr.app.config] or --run-config."
                )
        if self.partitioner == "dirichlet" and self.dirichlet_alpha <= 0:
            raise FederatedError(
                f"dirichlet-alpha = {self.dirichlet_alpha} must be > 0 (e.g. 0.1 for strongly "
                "non-IID, 100 for nearly IID); or set partitioner = \"iid\"."
            )
        if not 0.0 <= self.condensed_weight <= 1.0:
            raise FederatedError(
                f"condensed-weight = {self.condensed_weight} must be within [0, 1] (the condensed "
                "batch's share of the mix-mode loss); fix it in [tool.flwr.app.config]."
            )
        if self.lr <= 0:
            raise FederatedError(f"lr = {self.lr} must be > 0; fix lr in [tool.flwr.app.config].")
        if not 0.0 <= self.server_fraction < 1.0:
            raise FederatedError(
                f"server-fraction = {self.server_fraction} must be within [0, 1) (the share of the "
                "training set only the server holds, default 0.2); fix it in [tool.flwr.app.config]."
            )
        parse_trace(self.budget_trace)  # fails early with a BudgetError naming the spec
        if self.memory_trace:
            parse_trace(self.memory_trace)
        self.max_budget()
        parse_faults(self.fault_crash)
        return self

    def max_budget(self) -> int:
        from ..units import parse_bytes

        return int(parse_bytes(str(self.max_budget_bytes)))


RUN_CONFIG_DEFAULTS: dict[str, Any] = {
    f.name.replace("_", "-"): f.default for f in dataclasses.fields(FederatedConfig)
}


def config_from_run_config(run_config: Mapping[str, Any]) -> FederatedConfig:
    """Build a :class:`FederatedConfig` from Flower's ``context.run_config`` (kebab-case keys).

    Unknown keys are ignored with a warning (other apps may share the run config); values are
    converted to the field's type, and a value that cannot be converted raises
    :class:`FederatedError` naming the key.
    """
    known = {f.name: f for f in dataclasses.fields(FederatedConfig)}
    kwargs: dict[str, Any] = {}
    for key, value in run_config.items():
        name = str(key).replace("-", "_")
        if name not in known:
            log.warning("ignoring unknown run-config key %r (not an edgecond federated key)", key)
            continue
        default = known[name].default
        try:
            if isinstance(default, bool):
                v = value if isinstance(value, bool) else str(value).lower() in ("1", "true", "yes")
            elif isinstance(default, int):
                if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                    raise ValueError(value)
                v = int(value)
            elif isinstance(default, float):
                if isinstance(value, bool):
                    raise ValueError(value)
                v = float(value)
            else:
                v = str(value)
        except (TypeError, ValueError):
            raise FederatedError(
                f"run-config {key} = {value!r} has the wrong type; expected "
                f"{type(default).__name__} (default {default!r}). Fix it in "
                "[tool.flwr.app.config] or --run-config."
            ) from None
        kwargs[name] = v
    return FederatedConfig(**kwargs).validate()



def parse_faults(spec: str) -> dict[int, set[int]]:
    """``"1:2,3:1"`` → ``{1: {2}, 3: {1}}`` (partition → rounds in which that client crashes)."""
    out: dict[int, set[int]] = {}
    for part in filter(None, (p.strip() for p in str(spec or "").split(","))):
        pid, sep, rnd = part.partition(":")
        try:
            if not sep:
                raise ValueError(part)
            out.setdefault(int(pid), set()).add(int(rnd))
        except ValueError:
            raise FederatedError(
                f"fault-crash entry {part!r} is not PARTITION:ROUND (e.g. '1:2'); "
                "fix fault-crash in the run config or leave it empty."
            ) from None
    return out
