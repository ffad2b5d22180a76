r"""Judging generated text with the project's own autoregressive model.

The generative perplexity of samples (the MDLM / BD3-LM protocol, with an in-framework judge
instead of GPT-2): each sample is tokenised with the judge's tokenizer and scored by the
judge's exact next-token negative log-likelihood (an autoregressive run: ``block_elbo`` with
``block_length`` 1, e.g. ``pipelines/ar.yaml``'s ``causal_dit``, or ``block_dit`` with
``block_length`` 1),
in non-overlapping windows of the judge's sequence length:

.. math::  \mathrm{GenPPL} = \exp\Big(\frac{1}{\sum_i n_i}\sum_i \sum_{j=1}^{n_i}
           -\log p_{\mathrm{AR}}(x^{(i)}_j \mid x^{(i)}_{<j})\Big)

Low generative perplexity alone rewards repetitive text, so the mean unigram entropy of the
samples (the entropy of each sample's own token frequencies, in nats) is reported beside it,
and the same judge's perplexity on held-out data of the same length gives the reference.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from .pipeline import Pipeline


def check_judge(judge: Pipeline) -> None:
    """The judge must score with an exact autoregressive likelihood."""
    loss = judge.loss.evaluation()
    if not getattr(loss, "autoregressive", False):
        raise ValueError(f"the judge must be an autoregressive run (e.g. pipelines/ar.yaml: causal_dit "
                         f"with block_elbo, block_length 1); this one trains {type(loss).__name__}"
                         f"{'' if not hasattr(loss, 'block_length') else f' with block_length {loss.block_length}'}")


def unigram_entropy(tokens: list[int]) -> float:
    """Entropy (nats) of a sequence's own token frequencies."""
    if not tokens:
        return 0.0
    counts = torch.bincount(torch.tensor(tokens)).double()
    p = counts[counts > 0] / len(tokens)
    return float(-(p * p.log()).sum())


@torch.no_grad()
def token_nll(judge: Pipeline, sequences: list[torch.Tensor], *, batch_size: int = 64) -> list[torch.Tensor]:
    """Per-token exact NLL (nats) of each token sequence under the judge, window by window."""
    check_judge(judge)
    loss = judge.loss.evaluation()
    window = judge.config.data.seq_len
    pieces, owners = [], []
    for i, seq in enumerate(sequences):
        for start in range(0, len(seq), window):
            pieces.append(seq[start:start + window])
            owners.append(i)
    out = [[] for _ in sequences]
    by_length: dict[int, list[int]] = {}
    for k, piece in enumerate(pieces):
        by_length.setdefault(len(piece), []).append(k)
    for length, members in by_length.items():
        for chunk in range(0, len(members), batch_size):
            index = members[chunk:chunk + batch_size]
            batch = torch.stack([pieces[k] for k in index]).to(judge.device)
            with judge.autocast():
                nats = loss(judge.model, batch).nats.double().cpu()
            for row, k in enumerate(index):
                out[owners[k]].append((pieces[k], nats[row]))
    return [torch.cat([n for _, n in parts]) if parts else torch.zeros(0, dtype=torch.float64) for parts in out]


def judge_texts(judge: Pipeline, texts: list[str], *, reference: list[str] | None = None) -> dict[str, Any]:
    """Generative perplexity, bits per token and mean unigram entropy of ``texts`` under the
    judge; with ``reference`` (held-out text of the same length) the same for it."""
    report = {"samples": _score(judge, texts)}
    if reference:
        report["reference"] = _score(judge, reference)
    return report


def _score(judge: Pipeline, texts: list[str]) -> dict[str, Any]:
    try:
        sequences = [judge.tokenizer.encode(text).long() for text in texts]
    except (ValueError, KeyError) as exc:
        raise ValueError(f"the judge's tokenizer cannot encode the samples: {exc}") from None
    nll = token_nll(judge, [s for s in sequences if len(s)])
    tokens = sum(len(n) for n in nll)
    if tokens == 0:
        raise ValueError("no tokens to judge (the samples are empty)")
    per_sample = torch.stack([n.mean() for n in nll if len(n)])
    nats = float(torch.cat(nll).sum()) / tokens
    if not math.isfinite(nats):
        raise ValueError("the judge gave a non-finite likelihood")
    return {
        "sequences": len(texts), "tokens": tokens,
        "nats_per_token": nats, "bits_per_token": nats / math.log(2),
        "gen_perplexity": math.exp(nats) if nats < 700 else None,
        "nats_per_token_se": float(per_sample.std() / math.sqrt(len(per_sample))) if len(per_sample) > 1 else None,
        "unigram_entropy": sum(unigram_entropy(s.tolist()) for s in sequences) / len(sequences),
    }


def format_judgement(report: dict[str, Any]) -> str:
    lines = []
    for name, row in report.items():
        ppl = f"{row['gen_perplexity']:.2f}" if row["gen_perplexity"] is not None else "> 1e304"
        se = f" ± {row['nats_per_token_se'] / math.log(2):.3f}" if row["nats_per_token_se"] is not None else ""
        lines.append(f"{name}: gen. perplexity {ppl} ({row['bits_per_token']:.3f}{se} bits/token under the judge, "
                     f"{row['tokens']} tokens), unigram entropy {row['unigram_entropy']:.3f} nats")
    return "\n".join(lines)
