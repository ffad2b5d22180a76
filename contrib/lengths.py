r"""Length histograms of variable-length samples, compared with a reference length law.

Works for any sampler that returns lengths or padded tokens:

* a variable-length sampler (FlexMDM): ``SampleResult.lengths``;
* fixed-length masked diffusion that learned padding: the tokens before the first padding
  token (``end_id`` = the padding id); a sample whose padding is followed by another token
  is *malformed* (counted apart, its length still cut at the first padding);
* block diffusion with end-token stopping (``semi_ar`` with ``eos_id``): the tokens before
  the first end token (``end_id`` = ``eos_id``).

Distances between two length laws :math:`p, q` on :math:`0..N`:

* total variation :math:`\mathrm{TV} = \frac12 \sum_l |p_l - q_l|`;
* Wasserstein-1 (earth mover's) :math:`W_1 = \sum_l |F_p(l) - F_q(l)|` with the CDFs
  :math:`F`, in tokens: how far, on average, lengths must move.

With ``n`` samples from the reference law itself the empirical TV stays below
:func:`ddkit.testing.stats.tv_bound` with probability :math:`1 - 10^{-6}`; the report prints
that floor next to every row. With few samples spread over many lengths that floor is large
(the TV of an empirical law over ``N + 1`` lengths is mostly noise); ``bin_width = w`` then
computes the TV and its floor on the laws of ``length // w`` (W1 is always per length).

Example::

    >>> import torch
    >>> lengths = sample_lengths(torch.tensor([[0, 1, 2, 2], [1, 2, 0, 2]]), end_id=2)
    >>> lengths.tolist(), malformed(torch.tensor([[0, 1, 2, 2], [1, 2, 0, 2]]), end_id=2).tolist()
    ([2, 1], [False, True])
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import Tensor

from ddkit.testing.stats import tv_bound


def sample_lengths(tokens: Tensor, *, end_id: int | None = None, lengths: Tensor | None = None) -> Tensor:
    """``[B]`` lengths: ``lengths`` when given (a variable-length sampler's), else the
    position of the first ``end_id`` in each row of ``tokens`` (``N`` if none)."""
    if lengths is not None:
        return torch.as_tensor(lengths).long().cpu()
    if end_id is None:
        raise ValueError("give the sampler's lengths or the end / padding token id (end_id)")
    if tokens.dim() != 2:
        raise ValueError(f"tokens must be [B, N], got shape {tuple(tokens.shape)}")
    ends = tokens.cpu() == end_id
    first = torch.where(ends.any(-1), ends.long().argmax(-1), tokens.shape[1])
    return first.long()


def malformed(tokens: Tensor, *, end_id: int) -> Tensor:
    """``[B]`` bool: rows where a token other than ``end_id`` follows an ``end_id``."""
    ends = tokens.cpu() == end_id
    after = torch.cumsum(ends.long(), dim=-1) > 0
    return (after & ~ends).any(-1)


def length_law(lengths: Tensor, max_length: int) -> Tensor:
    """Frequencies of the lengths ``0..max_length`` (``[max_length + 1]`` float64)."""
    lengths = torch.as_tensor(lengths).long().cpu()
    if lengths.numel() == 0:
        raise ValueError("need at least one length")
    if bool(((lengths < 0) | (lengths > max_length)).any()):
        raise ValueError(f"lengths must be in 0..{max_length}, got {int(lengths.min())}..{int(lengths.max())}")
    return torch.bincount(lengths, minlength=max_length + 1).to(torch.float64) / lengths.numel()


def total_variation(p: Tensor, q: Tensor) -> float:
    return 0.5 * float((p - q).abs().sum())


def binned(law: Tensor, width: int) -> Tensor:
    """The law of ``length // width``: ``law`` summed over consecutive bins of ``width`` lengths."""
    pad = (-law.numel()) % width
    return torch.cat([law, law.new_zeros(pad)]).view(-1, width).sum(-1)


def wasserstein1(p: Tensor, q: Tensor) -> float:
    """Earth mover's distance between two laws on ``0..N`` (in tokens)."""
    return float((torch.cumsum(p, 0) - torch.cumsum(q, 0)).abs().sum())


@dataclass
class LengthRow:
    """One sample set against the reference."""

    name: str
    samples: int
    mean: float
    std: float
    at_max: float
    tv: float
    w1: float
    tv_floor: float
    malformed: float | None = None


@dataclass
class LengthReport:
    reference: str
    max_length: int
    reference_probs: list[float]
    rows: list[LengthRow]
    laws: dict[str, list[float]]
    bin_width: int = 1

    def table(self) -> str:
        """A markdown table: one row per sample set."""
        bins = "" if self.bin_width == 1 else f" TV and its floor over bins of {self.bin_width} lengths."
        lines = [f"Reference: {self.reference}; lengths 0..{self.max_length}. TV floor: the TV that "
                 f"exact samples stay below with probability 1 - 1e-6.{bins}", "",
                 "| samples | n | mean length | std | at max length | TV | TV floor | W1 (tokens) | malformed |",
                 "|---|---|---|---|---|---|---|---|---|"]
        for r in self.rows:
            bad = "-" if r.malformed is None else f"{r.malformed:.3%}"
            lines.append(f"| {r.name} | {r.samples} | {r.mean:.2f} | {r.std:.2f} | {r.at_max:.2%} | {r.tv:.4f} | "
                         f"{r.tv_floor:.4f} | {r.w1:.3f} | {bad} |")
        return "\n".join(lines)

    def to_json(self) -> dict:
        return {"reference": self.reference, "max_length": self.max_length, "bin_width": self.bin_width,
                "reference_probs": self.reference_probs, "rows": [asdict(r) for r in self.rows], "laws": self.laws}

    def plot(self, path: str | Path, title: str | None = None) -> Path:
        """A PNG: the reference law as bars, every sample set as a step line (over the bins
        of ``bin_width`` lengths)."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        width = self.bin_width
        reference = binned(torch.tensor(self.reference_probs), width)
        starts = [width * i for i in range(reference.numel())]
        centres = [start + (width - 1) / 2 for start in starts]
        fig, ax = plt.subplots(figsize=(8, 4.5))
        ax.bar(centres, reference.tolist(), width=width, color="0.85", edgecolor="0.6", label=self.reference)
        for row in self.rows:
            ax.step(centres, binned(torch.tensor(self.laws[row.name]), width).tolist(), where="mid", linewidth=1.5,
                    label=f"{row.name} (TV {row.tv:.3f}, W1 {row.w1:.2f})")
        ax.set_xlabel("length (tokens)")
        ax.set_ylabel("probability" if width == 1 else f"probability per {width} lengths")
        ax.set_title(title or "length distributions")
        ax.legend(fontsize=8)
        fig.tight_layout()
        path = Path(path)
        fig.savefig(path, dpi=120)
        plt.close(fig)
        return path


def length_report(samples: Mapping[str, Tensor], reference: Tensor, *, max_length: int,
                  reference_name: str = "reference", malformed_counts: Mapping[str, Tensor] | None = None,
                  bin_width: int = 1) -> LengthReport:
    """Compare the lengths of each sample set (``name -> [B]`` lengths) with a reference:
    an exact law (``[max_length + 1]`` probabilities, float) or reference lengths (long).
    ``malformed_counts``: per name, the ``[B]`` bool of :func:`malformed`; ``bin_width``: the TV
    over bins of that many lengths."""
    if not isinstance(bin_width, int) or not 1 <= bin_width <= max_length + 1:
        raise ValueError(f"bin_width must be an integer in 1..{max_length + 1}, got {bin_width!r}")
    reference = torch.as_tensor(reference).cpu()
    ref = reference.to(torch.float64) if reference.is_floating_point() else length_law(reference, max_length)
    if ref.shape != (max_length + 1,) or abs(float(ref.sum()) - 1.0) > 1e-9:
        raise ValueError(f"the reference law must be {max_length + 1} probabilities summing to 1")
    rows, laws = [], {}
    for name, lengths in samples.items():
        lengths = torch.as_tensor(lengths).long().cpu()
        law = length_law(lengths, max_length)
        values = lengths.to(torch.float64)
        bad = None
        if malformed_counts is not None and name in malformed_counts:
            bad = float(torch.as_tensor(malformed_counts[name]).float().mean())
        rows.append(LengthRow(name, lengths.numel(), float(values.mean()),
                              float(values.std()) if lengths.numel() > 1 else 0.0,
                              float(law[max_length]),
                              total_variation(binned(law, bin_width), binned(ref, bin_width)), wasserstein1(law, ref),
                              tv_bound(binned(ref, bin_width), lengths.numel()), bad))
        laws[name] = law.tolist()
    return LengthReport(reference_name, max_length, ref.tolist(), rows, laws, bin_width)
