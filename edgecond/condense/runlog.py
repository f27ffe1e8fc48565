"""Per-iteration logging of a condensation: JSON lines and optional TensorBoard."""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch

from ..errors import ConfigError

log = logging.getLogger("edgecond.condense.engine")


class _Logger:
    """JSON-lines + optional TensorBoard logging of per-iteration values.

    With TensorBoard and ``images`` (the :class:`SyntheticSet`), the image grid (row = class,
    column = rank: :func:`edgecond.show.image_grid`) is logged as ``images`` every
    ``ceil(total / 10)`` outer iterations and at the last one (``IMAGE_LOGS`` pictures per run).
    """

    IMAGE_LOGS = 10

    def __init__(self, log_path, tensorboard_dir, start: int, *, images=None, total: int = 0) -> None:
        self.fh = None
        self.tb = None
        self.images = images
        self.total = int(total)
        self.image_every = max(1, -(-self.total // self.IMAGE_LOGS))
        if log_path is not None:
            path = Path(log_path)
            path.parent.mkdir(parents=True, exist_ok=True)
            keep: list[str] = []
            if start > 0 and path.exists():  # drop lines past the checkpoint we resume from
                for line in path.read_text().splitlines():
                    try:
                        if int(json.loads(line).get("iteration", -1)) < start:
                            keep.append(line)
                    except (ValueError, AttributeError):
                        continue
            path.write_text("".join(line + "\n" for line in keep))
            self.fh = open(path, "a", buffering=1)
        if tensorboard_dir is not None:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(tensorboard_dir), purge_step=start if start > 0 else None)

    def image_due(self, t: int) -> bool:
        """Whether iteration ``t`` logs the image grid (with TensorBoard)."""
        return (t + 1) % self.image_every == 0 or t + 1 == self.total

    def write(self, record: dict) -> None:
        if self.fh is not None:
            self.fh.write(json.dumps(record) + "\n")
        if self.tb is not None:
            for k, v in record.items():
                if k != "iteration" and isinstance(v, (int, float)):
                    self.tb.add_scalar(k, v, record["iteration"])
            t = int(record["iteration"])
            if self.images is not None and self.image_due(t):
                from ..show import image_grid

                with torch.no_grad():
                    pixels = self.images.pixel_images().detach().cpu().float().numpy()
                self.tb.add_image("images", image_grid(pixels), t, dataformats="HWC")

    def close(self) -> None:
        if self.fh is not None:
            self.fh.close()
        if self.tb is not None:
            self.tb.close()
