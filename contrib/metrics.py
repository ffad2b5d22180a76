"""Metrics as JSON lines, and the PNG plot of the training and validation curves."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from .checkpoint import atomic_write_text


class MetricsLog:
    """Append-only ``metrics.jsonl``: one JSON object per line, each with ``step`` and ``split``."""

    def __init__(self, path: Path):
        self.path = Path(path)

    def write(self, record: dict[str, Any]) -> None:
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")

    def read(self) -> list[dict[str, Any]]:
        if not self.path.is_file():
            return []
        return [json.loads(line) for line in self.path.read_text(encoding="utf-8").splitlines() if line.strip()]

    def truncate_after(self, step: int) -> None:
        """Drop records after ``step`` (a resumed run repeats them)."""
        if self.path.is_file():
            kept = [r for r in self.read() if r.get("step", 0) <= step]
            atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in kept))


def plot_metrics(records: list[dict[str, Any]], path: Path, *, title: str = "") -> Path:
    """Training and validation bits per token against the step, written as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = [(r["step"], r["bits_per_token"]) for r in records if r.get("split") == "train"]
    valid = [(r["step"], r["bits_per_token"]) for r in records if r.get("split") == "validation"]
    fig, (ax_loss, ax_lr) = plt.subplots(2, 1, figsize=(7, 5.5), sharex=True,
                                         gridspec_kw={"height_ratios": [3, 1]})
    if train:
        ax_loss.plot(*zip(*train), label="train (NELBO, bits/token)", lw=1.2)
    if valid:
        ax_loss.plot(*zip(*valid), "o-", label="validation (EMA weights)", lw=1.5, ms=4)
    finite = [b for _, b in train + valid if math.isfinite(b)]
    if finite:
        ax_loss.set_ylim(min(finite) * 0.95, min(max(finite), 3 * min(finite)) * 1.05)
    ax_loss.set_ylabel("bits per token (upper bound)")
    ax_loss.grid(alpha=0.3)
    ax_loss.legend()
    if title:
        ax_loss.set_title(title)
    lr = [(r["step"], r["lr"]) for r in records if r.get("split") == "train" and "lr" in r]
    if lr:
        ax_lr.plot(*zip(*lr), color="gray", lw=1)
    ax_lr.set_ylabel("learning rate")
    ax_lr.set_xlabel("step")
    ax_lr.grid(alpha=0.3)
    fig.tight_layout()
    tmp = Path(path).with_name(f".{Path(path).name}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)
    return Path(path)
