"""Prompts, decoding and the denoising trajectory display.

* :func:`build_prompt` turns a prefix (``prompt``) or an infill template (``infill``, the
  blank character marking generated positions) into the sampler's prompt tensor, where
  ``-1`` means "generate" and any other id is kept fixed;
* :func:`render_trajectory` prints one sample at several steps, masks drawn as ``█``, the
  way a sequence is usually shown filling in;
* :func:`draw_samples` gets the sampling kernels ready before it starts the clock
  (:func:`ddkit.kernels.prepare`): compiling them, once after an install, is reported as
  ``compile_seconds``, not as sampling time.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

import ddkit
from ddkit import kernels

from .tokenizers import Tokenizer

#: the kernel operations that samplers call
SAMPLING_OPS = ("categorical", "masked_step", "commit_topk", "any_equal")
MASK_GLYPH = "█"
NEWLINE_GLYPH = "⏎"


def build_prompt(tokenizer: Tokenizer, num_samples: int, length: int | None, *, prompt: str | None = None,
                 infill: str | None = None, blank: str = "_") -> tuple[Tensor | None, int]:
    """``(prompt tensor [num_samples, length] or None, length)``."""
    if prompt is not None and infill is not None:
        raise ValueError("give either a prompt prefix or an infill template, not both")
    if infill is not None:
        if len(blank) != 1:
            raise ValueError(f"the blank character is {blank!r}; expected one character")
        if length is not None and length != len(infill):
            raise ValueError(f"the infill template has {len(infill)} characters but length={length}")
        row = []
        for i, char in enumerate(infill):
            if char == blank:
                row.append(-1)
            else:
                ids = tokenizer.encode(char).tolist()
                if len(ids) != 1:
                    raise ValueError(f"infill character {char!r} at position {i} is not one token of this "
                                     f"tokenizer; use a char tokenizer or ASCII text")
                row.append(ids[0])
        return torch.tensor(row, dtype=torch.long).expand(num_samples, -1).clone(), len(infill)
    if length is None:
        raise ValueError("length is required without an infill template")
    if prompt is None or prompt == "":
        return None, length
    ids = tokenizer.encode(prompt).long()
    if ids.numel() > length:
        raise ValueError(f"the prompt is {ids.numel()} tokens, longer than the sample length {length}")
    out = torch.full((num_samples, length), -1, dtype=torch.long)
    out[:, : ids.numel()] = ids
    return out, length


def printable(text: str) -> str:
    """One line: newlines and tabs as visible glyphs."""
    return text.replace("\n", NEWLINE_GLYPH).replace("\t", "⇥")


def render_state(tokenizer: Tokenizer, tokens: Tensor, mask_id: int | None) -> str:
    """One sequence with masks as :data:`MASK_GLYPH`."""
    V = tokenizer.vocab_size
    parts = [MASK_GLYPH if (mask_id is not None and t == mask_id) or t >= V else tokenizer.token_text(t)
             for t in tokens.tolist()]
    return printable("".join(parts))


def render_trajectory(tokenizer: Tokenizer, trajectory: list[Tensor], mask_id: int | None, *,
                      index: int = 0, snapshots: int = 9) -> str:
    """Sample ``index`` at ``snapshots`` evenly spaced steps, from all-noise to the result.
    Where the sampler masked clean tokens again (remasking), each line also counts the tokens
    remasked since the previous line: the number of masks alone can keep falling meanwhile."""
    if not trajectory:
        return ""
    last = len(trajectory) - 1
    picks = sorted({round(i * last / max(1, snapshots - 1)) for i in range(snapshots)})
    width = len(str(last))
    states = [state[index] for state in trajectory]
    remasked = [0] * len(states)
    if mask_id is not None:
        remasked[1:] = [int(((before != mask_id) & (after == mask_id)).sum()) for before, after in zip(states, states[1:])]
    lines, previous = [], 0
    for step in picks:
        state = states[step]
        masked = int((state == mask_id).sum()) if mask_id is not None else 0
        again = f" {sum(remasked[previous + 1:step + 1]):>4} remasked" if any(remasked) else ""
        lines.append(f"step {step:>{width}}/{last} {masked:>4} masked{again} │ {render_state(tokenizer, state, mask_id)}")
        previous = step
    return "\n".join(lines)


@dataclass
class Samples:
    texts: list[str]
    tokens: Tensor
    nfe: int
    steps: int
    seconds: float
    trajectory: str | None = None
    info: dict[str, Any] = field(default_factory=dict)
    compile_seconds: float = 0.0  # compiling the kernels before sampling (first run only), not in ``seconds``
    #: a variable-length sampler's lengths (``SampleResult.lengths``): ``texts`` hold that many tokens
    lengths: Tensor | None = None
    #: what the sampler reported in ``SampleResult.info`` (e.g. KV-cache commit passes)
    sampler_info: dict[str, Any] = field(default_factory=dict)

    @property
    def tokens_per_second(self) -> float:
        return self.tokens.numel() / max(self.seconds, 1e-9)

    def to_json(self) -> dict[str, Any]:
        return {"samples": self.texts, "tokens": self.tokens.tolist(), "nfe": self.nfe, "steps": self.steps,
                "seconds": self.seconds, "tokens_per_s": self.tokens_per_second,
                "kernel_compile_seconds": self.compile_seconds, **self.info,
                **({"lengths": self.lengths.tolist()} if self.lengths is not None else {}),
                **({"sampler_info": {k: v.tolist() if isinstance(v, Tensor) else v
                                     for k, v in self.sampler_info.items()}} if self.sampler_info else {})}


def draw_samples(denoiser: ddkit.Denoiser, process: ddkit.Process, sampler: ddkit.Sampler, tokenizer: Tokenizer,
                 *, num_samples: int, length: int | None, prompt: str | None = None, infill: str | None = None,
                 blank: str = "_", seed: int = 0, show: bool = False,
                 device: torch.device | str = "cpu",
                 parameterization: ddkit.Parameterization | None = None) -> Samples:
    """Sample, decode, time it, and (with ``show``) render the first sample's trajectory.
    ``parameterization`` is passed to ``sampler.sample`` when given (a sampler on the current
    protocol accepts it)."""
    prompt_ids, length = build_prompt(tokenizer, num_samples, length, prompt=prompt, infill=infill, blank=blank)
    device = torch.device(device)
    generator = torch.Generator(device=device).manual_seed(seed)
    start = time.perf_counter()
    compiled = kernels.prepare(SAMPLING_OPS, device, backend=getattr(sampler, "backend", kernels.AUTO))
    compile_seconds = time.perf_counter() - start if compiled else 0.0
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    extra = {} if parameterization is None else {"parameterization": parameterization}
    result = sampler.sample(denoiser, process, num_samples=num_samples, length=length,
                            prompt=None if prompt_ids is None else prompt_ids.to(device),
                            generator=generator, device=device, record_trajectory=show, **extra)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - start
    tokens = result.tokens.cpu()
    lengths = None if result.lengths is None else result.lengths.cpu()
    texts = [tokenizer.decode(row if lengths is None else row[:int(n)])
             for row, n in zip(tokens, lengths if lengths is not None else tokens)]
    trajectory = None
    if show and result.trajectory:
        trajectory = render_trajectory(tokenizer, [s.cpu() for s in result.trajectory], process.mask_id)
    return Samples(texts, tokens, result.nfe, result.steps, seconds, trajectory,
                   info={"seed": seed, "prompt": prompt, "infill": infill, "length": length},
                   compile_seconds=compile_seconds, lengths=lengths, sampler_info=dict(result.info))
