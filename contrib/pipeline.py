"""Building a pipeline's components from its validated config.

:meth:`Pipeline.build` turns a :class:`ddkit.config.PipelineConfig` into the data splits,
tokenizer, process, network, loss and sampler, passing what the pipeline owns: the
vocabulary size ``V`` comes from the tokenizer (and must agree with any ``vocab_size``
written in ``process`` or ``model``), the loss receives the ``process`` and
``parameterization`` sections, the sampler the ``parameterization``. Mismatches (vocabulary,
input states, sequence length above the network's maximum, time conditioning) are reported
as :class:`ddkit.config.ConfigError` before anything is trained.

:meth:`Pipeline.resolved_config` is the fully resolved config (defaults filled in, ``V``
written into ``process`` and ``model``, the tokenizer's alphabet written into
``data.tokenizer``), so a checkpoint's config rebuilds the same pipeline without the corpus.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import torch

import ddkit
from ddkit.config import ConfigError, PipelineConfig, load_pipeline
from ddkit.registry import split_spec

from .data import DataSplits, Dataset
from .tokenizers import Tokenizer


def resolve_device(name: str) -> torch.device:
    """``auto`` -> ``cuda`` if available, else ``cpu``; anything else must be usable."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"train.device: CUDA is not available on this machine (got {name!r}); use auto or cpu")
    return device


def _accepts(kind: str, name: str, parameter: str) -> bool:
    return parameter in ddkit.get_registry().get(kind, name).params.model_fields


def _with(kind: str, spec: Any, **params: Any) -> dict[str, Any]:
    """``spec`` plus the pipeline-provided ``params`` that the plugin declares."""
    name, given = split_spec(spec)
    return {"name": name, **given, **{k: v for k, v in params.items() if _accepts(kind, name, k)}}


@dataclass
class Pipeline:
    config: PipelineConfig
    tokenizer: Tokenizer
    data: DataSplits | None
    process: ddkit.Process
    parameterization: ddkit.Parameterization
    model: torch.nn.Module
    loss: ddkit.Loss
    sampler: ddkit.Sampler
    device: torch.device

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.vocab_size

    @classmethod
    def from_file(cls, path: str, overrides: list[str] | tuple[str, ...] = (), **kwargs: Any) -> Pipeline:
        return cls.build(load_pipeline(path, overrides), **kwargs)

    @classmethod
    def build(cls, config: PipelineConfig, *, load_data: bool = True, device: str | None = None) -> Pipeline:
        """Build every component. Without ``load_data`` the tokenizer must be complete
        (a resolved config carries its alphabet) and ``data`` is ``None``."""
        config = config.model_copy(deep=True)
        seq_len = config.data.seq_len
        dataset: Dataset = ddkit.build("dataset", config.data.dataset)
        tokenizer = ddkit.build("tokenizer", config.data.tokenizer) if config.data.tokenizer else None
        data = None
        if load_data:
            try:
                data = dataset.load(tokenizer, seq_len)
            except (OSError, ValueError) as exc:
                raise ConfigError(f"data: {exc}") from None
            tokenizer = data.tokenizer
            problems = []
            for split in ("train", "validation"):
                try:
                    data[split].check_length(seq_len, split)
                except (KeyError, ValueError) as exc:
                    problems.append(f"data.seq_len: {exc.args[0]}")
            if problems:
                raise ConfigError(problems)
        else:
            tokenizer = tokenizer if tokenizer is not None else dataset.default_tokenizer()
            if tokenizer.needs_fit:
                raise ConfigError("data.tokenizer: the tokenizer's alphabet is not recorded; "
                                  "load the data to fit it")
        V = tokenizer.vocab_size
        config.data.tokenizer = tokenizer.spec()

        problems = []
        for section in ("process", "model"):
            name, params = split_spec(getattr(config, section))
            if "vocab_size" in params and params["vocab_size"] != V:
                problems.append(
                    f"{section}.vocab_size: {params['vocab_size']} does not match the tokenizer's "
                    f"vocabulary of {V} symbols (data.tokenizer {tokenizer.spec()['name']!r}); "
                    f"remove {section}.vocab_size to take it from the data")
        if problems:
            raise ConfigError(problems)

        process = ddkit.build("process", _with("process", config.process, vocab_size=V))
        parameterization = ddkit.build("parameterization", config.parameterization)
        device_ = resolve_device(device or config.train.device)
        torch.manual_seed(config.seed)  # the network's initialisation follows the pipeline's seed
        model = ddkit.build("model", _with("model", config.model, vocab_size=V))
        config.process = _with("process", config.process, vocab_size=V)
        config.model = _with("model", config.model, vocab_size=V)
        problems = cls._check_model(config, model, process, parameterization)
        if problems:
            raise ConfigError(problems)
        loss = ddkit.build("loss", _with("loss", config.loss, process=process,
                                         parameterization=config.parameterization))
        sampler = ddkit.build("sampler", _with("sampler", config.sampler,
                                               parameterization=config.parameterization))
        model.to(device_)
        loss.to(device_)
        return cls(config, tokenizer, data, process, parameterization, model, loss, sampler, device_)

    @staticmethod
    def _check_model(config: PipelineConfig, model: torch.nn.Module, process: ddkit.Process,
                     parameterization: ddkit.Parameterization) -> list[str]:
        problems = []
        out_vocab = getattr(model, "vocab_size", None)
        if out_vocab is not None and out_vocab != process.vocab_size:
            problems.append(f"model.vocab_size: the network predicts {out_vocab} tokens but the process "
                            f"has vocab_size {process.vocab_size}")
        states = getattr(model, "num_states", None)
        if states is not None and states < process.num_states:
            problems.append(f"model.num_states: the network embeds {states} input states but the "
                            f"process has {process.num_states} (V + the mask)")
        max_len = getattr(model, "max_seq_len", None)
        if max_len is not None:
            if config.data.seq_len > max_len:
                problems.append(f"data.seq_len: {config.data.seq_len} is above the model's maximum "
                                f"sequence length model.max_seq_len={max_len}")
            length = config.sample.length or config.data.seq_len
            if length > max_len:
                problems.append(f"sample.length: {length} is above model.max_seq_len={max_len}")
        model_tc = getattr(model, "time_conditioning", None)
        if model_tc is not None and model_tc != parameterization.time_conditioning:
            problems.append(
                f"model.time_conditioning: {model_tc} but parameterization.time_conditioning is "
                f"{parameterization.time_conditioning}; set both to the same value")
        return problems

    def parameterization_for(self, sampler: ddkit.Sampler) -> ddkit.Parameterization | None:
        """The pipeline's parameterization if ``sampler.sample`` takes it as ``parameterization=``
        (samplers on the current protocol do), else ``None``."""
        takes = isinstance(sampler, ddkit.Sampler) and sampler.takes_parameterization()
        return self.parameterization if takes else None

    def resolved_config(self) -> dict[str, Any]:
        """The config with every default and every pipeline-provided value written in."""
        return copy.deepcopy(self.config.model_dump(mode="json"))

    def eval_loss(self, *, time_sampling: str | None = None, discrete_steps: int | None = None) -> ddkit.Loss:
        """The evaluation loss: the training loss (or ``discrete_elbo`` with ``T`` steps) with
        the given time sampling."""
        spec = self.config.loss if discrete_steps is None else {"name": "discrete_elbo", "num_steps": discrete_steps}
        name, params = split_spec(spec)
        if time_sampling is not None and _accepts("loss", name, "time_sampling"):
            params["time_sampling"] = time_sampling
        loss = ddkit.build("loss", _with("loss", {"name": name, **params}, process=self.process,
                                         parameterization=self.config.parameterization))
        return loss.to(self.device)  # a learnable schedule is shared through self.process

    def autocast(self) -> torch.autocast:
        """bf16 autocast on CUDA (``train.precision`` auto or bf16); disabled otherwise."""
        precision = self.config.train.precision
        enabled = self.device.type == "cuda" and precision in ("auto", "bf16")
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, enabled=enabled)


class AutocastDenoiser:
    """A network called under the pipeline's autocast: a denoiser for losses and samplers."""

    def __init__(self, model: torch.nn.Module, pipeline: Pipeline):
        self.model, self.pipeline = model, pipeline

    def __call__(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        with self.pipeline.autocast():
            return self.model(x_t, t)
