"""The subset-degradation report: accuracy of every method at every size, storage, runtimes.

:class:`SubsetDegradationResult` writes ``subset_degradation.json``, ``.md`` (the Table-1 layout of
multisize-dataset-condensation.md) and ``.png``. The protocol that fills it (Baselines A/B/C, MDC,
SDC, random real images) is ``benchmarks/subset_protocol.py``; ``edgecond demo`` writes it too.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["METHOD_KEYS", "SubsetDegradationResult"]

METHOD_KEYS: tuple[str, ...] = ("random", "A", "B", "C", "MDC", "SDC-LFS", "SDC-LBS")


@dataclass
class SubsetDegradationResult:
    """Accuracy of every method at every size, storage, runtimes; writes JSON / Markdown / PNG."""

    config: dict
    methods: dict[str, dict[str, Any]]
    runtimes: dict[str, float]
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict:
        out: dict[str, Any] = {k: v for k, v in self.methods.items()}
        out["runtimes"] = dict(self.runtimes)
        out["config"] = self.config
        out.update(self.extra)
        return out

    @classmethod
    def from_dict(cls, data: dict) -> "SubsetDegradationResult":
        """Inverse of :meth:`to_dict` (reads a ``subset_degradation.json``)."""
        methods = {k: data[k] for k in METHOD_KEYS if k in data}
        extra = {k: v for k, v in data.items() if k not in METHOD_KEYS and k not in ("runtimes", "config")}
        return cls(config=dict(data.get("config", {})), methods=methods, runtimes=dict(data.get("runtimes", {})),
                   extra=extra)

    def averages(self) -> dict[str, float]:
        return {k: float(np.mean(v["mean"])) for k, v in self.methods.items() if v.get("mean")}

    def to_markdown(self) -> str:
        """Table-1 layout: a row per method, sizes as columns, Avg. and Diff. vs C (points)."""
        keys = [k for k in METHOD_KEYS if k in self.methods]
        sizes = self.methods[keys[0]]["sizes"] if keys else []
        avgs = self.averages()
        head = ["method", *[str(s) for s in sizes], "Avg.", "Diff. vs C"]
        lines = [
            f"Subset degradation: {self.config.get('dataset')}, base {self.config.get('base')}, "
            f"IPC{self.config.get('ipc')}, preset {self.config.get('preset')}; test accuracy (%) "
            f"mean ± std over seeds {list(self.config.get('seeds', []))}.",
            "",
            "| " + " | ".join(head) + " |",
            "|" + "|".join(["---"] + ["---:"] * (len(head) - 1)) + "|",
        ]
        c_avg = avgs.get("C")
        for k in keys:
            m = self.methods[k]
            cells = [f"{100 * mu:.2f} ± {100 * sd:.2f}" for mu, sd in zip(m["mean"], m["std"])]
            diff = "0" if k == "C" else ("-" if c_avg is None else f"{100 * (avgs[k] - c_avg):+.2f}")
            lines.append("| " + " | ".join([k, *cells, f"{100 * avgs[k]:.2f}", diff]) + " |")
        lines += ["", "| method | condensations | stored bytes | condense s | evaluate s |", "|---|---:|---:|---:|---:|"]
        for k in keys:
            m = self.methods[k]
            lines.append(
                f"| {k} | {m['runs']} | {m['storage_bytes']} | {m['condense_seconds']:.1f} | {m['eval_seconds']:.1f} |"
            )
        ratio = self.extra.get("mdc_cost_ratio")
        if ratio is not None:
            lines += ["", f"MDC / C seconds per outer iteration: {ratio:.3f}× "
                          f"({self.extra.get('mdc_seconds_per_iteration'):.4f} s vs "
                          f"{self.extra.get('base_seconds_per_iteration'):.4f} s)."]
        lines.append(f"Total wall time: {self.runtimes.get('total', float('nan')):.1f} s.")
        return "\n".join(lines) + "\n"

    def plot(self, path: str | Path) -> Path:
        """Accuracy vs size, one line per method (matplotlib Agg)."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
        styles = {"random": ":", "A": "-", "B": "-.", "C": "--", "MDC": "-", "SDC-LFS": "-", "SDC-LBS": "-."}
        for k in METHOD_KEYS:
            if k not in self.methods:
                continue
            m = self.methods[k]
            ax.errorbar(m["sizes"], [100 * v for v in m["mean"]], yerr=[100 * v for v in m["std"]],
                        label=k, linestyle=styles.get(k, "-"), marker="o", markersize=3, capsize=2,
                        linewidth=2.2 if k in ("MDC", "SDC-LFS") else 1.3)
        ax.set_xlabel("images per class (prefix size)")
        ax.set_ylabel("test accuracy (%)")
        ax.set_title(f"{self.config.get('dataset')} · {self.config.get('base')} · IPC{self.config.get('ipc')}")
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path)
        plt.close(fig)
        return path

    def write(self, out_dir: str | Path, stem: str = "subset_degradation") -> dict[str, Path]:
        """Write ``<stem>.json``, ``<stem>.md`` and ``<stem>.png`` under ``out_dir``."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        paths = {"json": out / f"{stem}.json", "md": out / f"{stem}.md", "png": out / f"{stem}.png"}
        paths["json"].write_text(json.dumps(self.to_dict(), indent=2, default=str) + "\n")
        paths["md"].write_text(self.to_markdown())
        if self.methods:
            self.plot(paths["png"])
        return paths
