"""Metrics as JSON lines, and the PNG plot of the training and validation curves."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from ddkit import DDKitError

from .checkpoint import atomic_write_text, temporary_path


class MetricsError(DDKitError):
    """A metrics file holds a line that is not a JSON object."""


class MetricsLog:
    """Append-only ``metrics.jsonl``: one JSON object per line, each with ``step`` and ``split``.

    A process killed while appending can leave the last line cut short; that line (the last
    one, without its newline) is dropped when the file is read, and by :meth:`truncate_after`
    on resume. Any other line that does not hold a JSON object is an error."""

    def __init__(self, path: Path):
        self.path = Path(path)

    def write(self, record: dict[str, Any]) -> None:
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record, allow_nan=False) + "\n")

    def read(self) -> list[dict[str, Any]]:
        if not self.path.is_file():
            return []
        text = self.path.read_text(encoding="utf-8")
        lines = text.split("\n")
        torn = lines.pop()  # "" after a final newline; else a line cut short by a kill
        records = []
        for number, line in enumerate(lines, start=1):
            if line.strip():
                records.append(self._parse(line, number))
        if torn.strip():
            try:
                records.append(self._parse(torn, len(lines) + 1))
            except MetricsError:
                pass
        return records

    def _parse(self, line: str, number: int) -> dict[str, Any]:
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise MetricsError(f"{self.path}, line {number}: not valid JSON ({exc.msg}: {line[:60]!r}); "
                               f"fix or delete that line (only a cut-off last line is dropped by itself)") from None
        if not isinstance(record, dict):
            raise MetricsError(f"{self.path}, line {number}: expected a JSON object, got {line[:60]!r}")
        return record

    def record(self, step: int, split: str) -> dict[str, Any] | None:
        """The last record of ``split`` at ``step``, if there is one."""
        found = [r for r in self.read() if r.get("step") == step and r.get("split") == split]
        return found[-1] if found else None

    def truncate_after(self, step: int) -> None:
        """Drop records after ``step`` (a resumed run repeats them) and a cut-off last line."""
        if self.path.is_file():
            kept = [r for r in self.read() if r.get("step", 0) <= step]
            atomic_write_text(self.path, "".join(json.dumps(r, allow_nan=False) + "\n" for r in kept))


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
    tmp = temporary_path(Path(path))
    try:
        fig.savefig(tmp, dpi=110, format="png")
        tmp.replace(path)
    finally:
        plt.close(fig)
        tmp.unlink(missing_ok=True)
    return Path(path)
