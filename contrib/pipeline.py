"""Building a pipeline's components from its validated config.

:meth:`Pipeline.build` turns a :class:`~ddkit.contrib.pipeline_config.PipelineConfig` into the
data splits, tokenizer, process, network, loss and sampler, passing what the pipeline owns
(:data:`~ddkit.contrib.pipeline_config.PIPELINE_PROVIDED`): the vocabulary size ``V`` comes
from the tokenizer (and must agree with any ``vocab_size`` written in ``process`` or
``model``); the pipeline builds one process and one parameterization, and the loss and the
sampler receive those very objects (a sampler whose ``sample`` takes ``parameterization=``
gets it there as well, :meth:`Pipeline.parameterization_for`). Components that needed the
fitted vocabulary are validated here, the others were when the config was loaded.

Before anything is trained, these mismatches are reported as
:class:`ddkit.config.ConfigError`, one line each: vocabulary, input states, sequence length
above the network's maximum; a model whose time conditioning differs from the
parameterization's; a sampler whose ``requires`` the process lacks; a sampler that would not
receive the pipeline's parameterization while that is not the plain default (the mean
without time conditioning), e.g. a time-conditioned model that would receive ``t = 0``;
a device this machine lacks; an evaluation split the data set lacks; a prompt or infill
template with characters outside the vocabulary; a network, or a batch's logits, too large
for the memory. The network's size is found by building it on PyTorch's ``meta`` device
(shapes without storage) before it is built for real, so a network that does not fit is
never allocated.

:meth:`Pipeline.resolved_config` is the fully resolved config (defaults filled in, ``V``
written into ``process`` and ``model``, the tokenizer's alphabet written into
``data.tokenizer``), so a checkpoint's config rebuilds the same pipeline without the corpus.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from typing import Any

import torch

import ddkit
from ddkit.config import ConfigError, format_parameter_error
from ddkit.config.errors import show_value
from ddkit.registry import split_spec

from .data import DataSplits, Dataset
from .memory import format_bytes, memory_bytes, out_of_memory
from .pipeline_config import (DEVICE_PATTERN, PIPELINE_PROVIDED, PROVIDED_FROM, SETTABLE, PipelineConfig,
                              check_components, default_spec, load_pipeline, provided_values, set_components)
from .sampling import build_prompt
from .tokenizers import Tokenizer


#: bytes per parameter while training in float32: the weights, their gradients, AdamW's two
#: moments and the EMA copy, 4 bytes each
TRAINING_BYTES_PER_PARAMETER = 5 * 4


def device_problem(name: str) -> str | None:
    """Why ``name`` is not a device of this machine (``None``: it is): not one of ``auto``,
    ``cpu``, ``cuda``, ``cuda:N``, ``mps``, or not present here."""
    if not isinstance(name, str) or not re.fullmatch(DEVICE_PATTERN, name):
        return f"{name!r} is not a device; expected auto, cpu, cuda, cuda:N or mps"
    if name in ("auto", "cpu"):
        return None
    if name == "mps":
        return None if torch.backends.mps.is_available() else \
            "'mps' (Apple's Metal backend) is not available on this machine; use auto or cpu"
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if count == 0:
        return f"{name!r}: CUDA is not available on this machine; use auto or cpu"
    index = torch.device(name).index
    if index is not None and index >= count:
        return f"{name!r}: this machine has {count} CUDA device{'s' if count != 1 else ''} (cuda:0 to cuda:{count - 1})"
    return None


def resolve_device(name: str, *, where: str = "train.device") -> torch.device:
    """``auto`` -> ``cuda`` if available, else ``cpu``; anything else must be a device of this
    machine (:func:`device_problem`), else a :class:`ConfigError` naming ``where``."""
    problem = device_problem(name)
    if problem is not None:
        raise ConfigError(f"{where}: {problem}")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def too_large(exc: BaseException) -> bool:
    """Whether ``exc`` says that a number was too large for Python or PyTorch to compute with
    (an overflow, a size beyond 64 bits)."""
    text = str(exc).lower()
    return isinstance(exc, OverflowError) or "overflow" in text or "cannot be represented" in text


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


@dataclass
class ModelSize:
    """What a network holds: trainable parameters, and the bytes of its buffers (tables such
    as RoPE's, kept once)."""

    parameters: int
    buffer_bytes: int

    @property
    def training_bytes(self) -> int:
        """About what training takes besides activations (:data:`TRAINING_BYTES_PER_PARAMETER`)."""
        return self.parameters * TRAINING_BYTES_PER_PARAMETER + self.buffer_bytes

    def __str__(self) -> str:
        buffers = f" and {format_bytes(self.buffer_bytes)} of buffers" if self.buffer_bytes >= 10**6 else ""
        return f"{self.parameters:,} parameters{buffers}"


def model_size(spec: Any, values: dict[str, Any]) -> ModelSize | None:
    """The size of the network ``spec`` builds, from a build on the ``meta`` device (shapes,
    no storage: nothing is allocated). Sizes beyond what PyTorch can represent are a
    :class:`ConfigError` (:func:`build_component`); a network that cannot be built on the meta
    device gives ``None``."""
    try:
        with torch.device("meta"):
            model = build_component("model", spec, values, where="model")
    except (RuntimeError, TypeError):  # sizes too large to compute with are a ConfigError of build_component
        return None
    return ModelSize(sum(p.numel() for p in model.parameters()),
                     sum(b.numel() * b.element_size() for b in model.buffers()))


def memory_problems(size: ModelSize, device: torch.device) -> list[str]:
    """A network that would not fit for training on ``device`` (:attr:`ModelSize.training_bytes`),
    or whose weights would not fit the RAM it is built in."""
    needs = [(device, size.training_bytes, "to train in float32 (weights, gradients, AdamW's two moments "
              "and the EMA)")]
    if device.type != "cpu":
        needs.append((torch.device("cpu"), size.parameters * 4 + size.buffer_bytes, "to build it in RAM"))
    problems = []
    for where, need, purpose in needs:
        memory = memory_bytes(where)
        if memory is not None and need > memory[0]:
            problems.append(f"model: {size} need about {format_bytes(need)} {purpose}, but {where} "
                            f"has {format_bytes(memory[0])} {memory[1]}; lower model.width or model.depth")
    return problems


def logits_problem(where: str, rows: int, tokens: int, vocab_size: int, device: torch.device) -> str | None:
    """A batch whose float32 logits alone (``rows x tokens x V x 4`` bytes: the output of any
    denoiser) would not fit the memory of ``device``; ``None`` when they fit."""
    memory = memory_bytes(device)
    need = rows * tokens * vocab_size * 4
    if memory is None or need <= memory[0]:
        return None
    return (f"{where}: {rows:,} rows of {tokens:,} tokens need at least {format_bytes(need)} for their float32 "
            f"logits over {vocab_size} tokens alone, but {device} has {format_bytes(memory[0])} {memory[1]}")


def evaluation_rows(batch_size: int, time_samples: int, sequences: int | None) -> int:
    """Rows of the largest denoiser call of an evaluation (:func:`~ddkit.contrib.evaluate.estimate_elbo`):
    ``batch_size // time_samples`` sequences (at least one) ``time_samples`` times each, at
    most the ``sequences`` evaluated."""
    group = max(1, batch_size // time_samples)
    return time_samples * (group if sequences is None else min(group, sequences))


def batch_problems(config: PipelineConfig, vocab_size: int, device: torch.device,
                   eval_sequences: int | None = None) -> list[str]:
    """The pipeline's batches (training, evaluation of ``eval_sequences`` chunks when known,
    samples) that fail :func:`logits_problem`."""
    sample = config.sample
    length = len(sample.infill) if sample.infill is not None else sample.length or config.data.seq_len
    if config.eval.max_sequences is not None:
        eval_sequences = min(eval_sequences or config.eval.max_sequences, config.eval.max_sequences)
    eval_rows = evaluation_rows(config.eval.batch_size, config.eval.time_samples, eval_sequences)
    batches = [("train.batch_size", config.train.batch_size, config.data.seq_len),
               ("eval.batch_size", eval_rows, config.data.seq_len),
               ("sample.num_samples", sample.num_samples, length)]
    problems = [logits_problem(where, rows, tokens, vocab_size, device) for where, rows, tokens in batches]
    return [problem for problem in problems if problem is not None]


def build_component(kind: str, spec: Any, values: dict[str, Any], *, where: str) -> Any:
    """Build a component of the pipeline from its spec, with the ``values`` the pipeline passes
    to its kind (:func:`~ddkit.contrib.pipeline_config.provided_values`). A parameter the
    pipeline owns that the spec writes, a parameter the plugin rejects, or a factory's
    :class:`ValueError` is a :class:`ConfigError` whose lines start with ``where``."""
    try:
        name, given = split_spec(spec)
        record = ddkit.get_registry().get(kind, name)
    except ddkit.DDKitError as exc:
        raise ConfigError(f"{where}.name: {exc}") from None
    owned = [key for key in given if key in PIPELINE_PROVIDED.get(kind, ()) and key not in SETTABLE]
    if owned:
        raise ConfigError([f"{where}.{key}: set by {PROVIDED_FROM[key]}; remove it here" for key in owned])
    try:
        return ddkit.build(kind, {"name": name, **given, **provided_values(kind, record, values)})
    except ddkit.ParameterError as exc:
        own = exc.kind == kind and exc.name == name
        raise ConfigError(format_parameter_error(exc, where=where) if own else f"{where}: {exc}") from None
    except ddkit.NumericalError:
        raise
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    except (OverflowError, RuntimeError, TypeError) as exc:
        if not too_large(exc):  # a number that Python or PyTorch cannot compute with, or else a bug
            raise
        raise ConfigError(f"{where}: a parameter is too large to compute with ({_first_line(exc)}; got "
                          f"{show_value(given, 120)})") from None


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
    def build(cls, config: PipelineConfig, *, load_data: bool = True, device: str | None = None,
              check_sample: bool = True) -> Pipeline:
        """Build every component. Without ``load_data`` the tokenizer must be complete
        (a resolved config carries its alphabet) and ``data`` is ``None``. ``check_sample``:
        refuse a ``sample`` section whose prompt or infill template the tokenizer cannot
        encode (a stored run's section is only the default of ``ddkit sample``, which checks
        what it samples with)."""
        config = config.model_copy(deep=True)
        seq_len = config.data.seq_len
        device_ = resolve_device(device, where="device") if device else resolve_device(config.train.device)
        dataset: Dataset = build_component("dataset", config.data.dataset, {}, where="data.dataset")
        tokenizer = (build_component("tokenizer", config.data.tokenizer, {}, where="data.tokenizer")
                     if config.data.tokenizer else None)
        data, eval_sequences = None, None
        if load_data:
            try:
                data = dataset.load(tokenizer, seq_len)
            except (OSError, ValueError) as exc:
                raise ConfigError(f"data: {exc}") from None
            except (MemoryError, RuntimeError) as exc:
                if not out_of_memory(exc):
                    raise
                raise ConfigError(f"data: the data set does not fit the memory ({_first_line(exc)})") from None
            tokenizer = data.tokenizer
            problems = []
            for split in ("train", "validation"):
                try:
                    data[split].check_length(seq_len, split)
                except (KeyError, ValueError) as exc:
                    problems.append(f"data.seq_len: {exc.args[0]}")
            split = config.eval.split
            if split in data.splits:
                eval_sequences = data[split].num_chunks(seq_len)
            if split not in data.splits:
                problems.append(f"eval.split: this data set has no {split!r} split; it has {', '.join(data.splits)}")
            elif split not in ("train", "validation"):
                try:
                    data[split].check_length(seq_len, split)
                except ValueError as exc:
                    problems.append(f"eval.split: {exc}")
            if problems:
                raise ConfigError(problems)
        else:
            tokenizer = tokenizer if tokenizer is not None else dataset.default_tokenizer()
            if tokenizer.needs_fit:
                raise ConfigError("data.tokenizer: the tokenizer's alphabet is not recorded; "
                                  "load the data to fit it")
        V = tokenizer.vocab_size
        sample_problems = cls._check_sample(config, tokenizer) if check_sample else []
        if sample_problems:
            raise ConfigError(sample_problems)
        config.data.tokenizer = tokenizer.spec()
        config.mark_checked("data.tokenizer")  # the spec of a built tokenizer

        # components that needed this vocabulary are validated now (the rest were at load time)
        problems, checked, vocabulary = check_components(config.model_dump(mode="json"), vocab_size=V,
                                                         only=config.unchecked(V))
        set_components(config, checked, vocabulary)
        for section in ("process", "model"):
            name, params = split_spec(getattr(config, section))
            if "vocab_size" in params and params["vocab_size"] != V:
                problems.append(
                    f"{section}.vocab_size: {params['vocab_size']} does not match the tokenizer's "
                    f"vocabulary of {V} symbols (data.tokenizer {tokenizer.spec()['name']!r}); "
                    f"remove {section}.vocab_size to take it from the data")
        if problems:
            raise ConfigError(problems)

        values: dict[str, Any] = {"vocab_size": V}
        process = values["process"] = build_component("process", config.process, values, where="process")
        parameterization = values["parameterization"] = build_component(
            "parameterization", config.parameterization, values, where="parameterization")
        size = model_size(config.model, values)  # before any memory is taken
        problems = (memory_problems(size, device_) if size is not None else []) + batch_problems(config, V, device_, eval_sequences)
        if problems:
            raise ConfigError(problems)
        torch.manual_seed(config.seed)  # the network's initialisation follows the pipeline's seed
        try:
            model = build_component("model", config.model, values, where="model")
        except (MemoryError, RuntimeError) as exc:  # less memory than the estimate said
            if not out_of_memory(exc):
                raise
            raise ConfigError(f"model: the network does not fit the memory ({_first_line(exc)})") from None
        for section in ("process", "model"):  # the resolved config records V
            name, params = split_spec(getattr(config, section))
            record = ddkit.get_registry().get(section, name)
            setattr(config, section, {"name": name, **params, **provided_values(section, record, {"vocab_size": V})})
        loss = build_component("loss", config.loss, values, where="loss")
        sampler = build_component("sampler", config.sampler, values, where="sampler")
        pipeline = cls(config, tokenizer, data, process, parameterization, model, loss, sampler, device_)
        problems = cls._check_model(config, model, process, parameterization, loss, sampler)
        problems += pipeline.sampler_problems(sampler, config.sampler, where="sampler")
        if problems:
            raise ConfigError(problems)
        model.to(device_)
        loss.to(device_)
        return pipeline

    def make_sampler(self, spec: Any, *, where: str = "sampler") -> ddkit.Sampler:
        """A sampler for this pipeline (another one than the config's, or other parameters):
        built with the pipeline's parameterization and checked like the config's sampler."""
        sampler = build_component("sampler", spec, {"parameterization": self.parameterization}, where=where)
        problems = self.sampler_problems(sampler, spec, where=where)
        if problems:
            raise ConfigError(problems)
        return sampler

    def sampler_problems(self, sampler: ddkit.Sampler, spec: Any, *, where: str = "sampler") -> list[str]:
        """What keeps ``sampler`` from sampling this pipeline's model: a process without the
        capabilities it requires; the pipeline's parameterization, when it is not the plain
        default, reaching it neither through ``sample(parameterization=...)`` nor through its
        own ``parameterization`` parameter."""
        problems = []
        for check, argument in ((sampler.check_process, self.process), (sampler.check_model, self.model)):
            try:
                check(argument)
            except ValueError as exc:
                problems.append(f"{where}: {exc}")
        name, _ = split_spec(spec)
        declared = "parameterization" in ddkit.get_registry().get("sampler", name).params.model_fields
        if not declared and self.parameterization_for(sampler) is None:
            default = ddkit.build("parameterization", default_spec(("parameterization",)))
            if self.parameterization.time_conditioning:
                problems.append(f"{where}: sampler {name!r} does not take the pipeline's parameterization; "
                                f"a time-conditioned model would receive t = 0")
            elif type(self.parameterization) is not type(default):
                pname, _ = split_spec(self.config.parameterization)
                problems.append(f"{where}: sampler {name!r} does not take the pipeline's parameterization "
                                f"{pname!r}; it would read the model's outputs through its own")
        return problems

    @staticmethod
    def _check_model(config: PipelineConfig, model: torch.nn.Module, process: ddkit.Process,
                     parameterization: ddkit.Parameterization, loss: ddkit.Loss,
                     sampler: ddkit.Sampler) -> list[str]:
        problems = []
        try:
            loss.check_model(model)
        except ValueError as exc:
            problems.append(f"loss: {exc}")
        loss_block, model_block = getattr(loss, "block_length", None), getattr(model, "block_length", None)
        if getattr(model, "block_causal", False) and loss_block is not None and loss_block != model_block:
            problems.append(f"loss.block_length: {loss_block} but the block-causal model has model.block_length "
                            f"{model_block}; set both to the same value (e.g. loss.block_length: "
                            f"${{model.block_length}})")
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
            infill = config.sample.infill
            length = len(infill) if infill is not None else config.sample.length or config.data.seq_len
            if length > max_len and getattr(sampler, "context", None) is None:  # a window lets it be longer
                what = "sample.infill: the template's length" if infill is not None else "sample.length:"
                problems.append(f"{what} {length} is above model.max_seq_len={max_len}")
        model_tc = getattr(model, "time_conditioning", None)
        if model_tc is not None and model_tc != parameterization.time_conditioning:
            effect = ("the network would receive t = 0" if model_tc else
                      "the network would ignore the time it is given")
            problems.append(
                f"model.time_conditioning: {model_tc} but parameterization.time_conditioning is "
                f"{parameterization.time_conditioning} ({effect}); set both to the same value")
        return problems

    @staticmethod
    def _check_sample(config: PipelineConfig, tokenizer: Tokenizer) -> list[str]:
        """A prompt or infill template that the tokenizer cannot encode, or that does not fit
        the sample length (as :func:`~ddkit.contrib.runner.sample_pipeline` will read them)."""
        sample = config.sample
        if sample.prompt is None and sample.infill is None:
            return []
        where = "sample.infill" if sample.infill is not None else "sample.prompt"
        length = None if sample.infill is not None else sample.length or config.data.seq_len
        try:
            build_prompt(tokenizer, 1, length, prompt=sample.prompt, infill=sample.infill, blank=sample.blank)
        except ValueError as exc:
            return [f"{where}: {exc}"]
        return []

    def parameterization_for(self, sampler: ddkit.Sampler) -> ddkit.Parameterization | None:
        """The pipeline's parameterization if ``sampler.sample`` takes it as ``parameterization=``
        (samplers on the current protocol do), else ``None``."""
        takes = isinstance(sampler, ddkit.Sampler) and sampler.takes_parameterization()
        return self.parameterization if takes else None

    def resolved_config(self) -> dict[str, Any]:
        """The config with every default and every pipeline-provided value written in."""
        return copy.deepcopy(self.config.model_dump(mode="json"))

    def eval_loss(self, *, time_sampling: str | None = None, discrete_steps: int | None = None) -> ddkit.Loss:
        """The evaluation loss: the training loss's bound (:meth:`ddkit.Loss.evaluation`), or
        ``discrete_elbo`` with ``T`` steps, with the given time sampling."""
        spec = self.config.loss if discrete_steps is None else {"name": "discrete_elbo", "num_steps": discrete_steps}
        name, params = split_spec(spec)
        if time_sampling is not None and "time_sampling" in ddkit.get_registry().get("loss", name).params.model_fields:
            params["time_sampling"] = time_sampling
        values = {"process": self.process, "parameterization": self.parameterization}
        loss = build_component("loss", {"name": name, **params}, values, where="loss").evaluation()
        return loss.to(self.device)  # a learnable schedule is shared through self.process

    def autocast(self) -> torch.autocast:
        """bf16 autocast on CUDA (``train.precision`` auto or bf16); disabled otherwise."""
        precision = self.config.train.precision
        enabled = self.device.type == "cuda" and precision in ("auto", "bf16")
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, enabled=enabled)


class AutocastDenoiser:
    """A network called under the pipeline's autocast: a denoiser for losses and samplers.
    The network's other attributes show through (declared capabilities such as
    ``block_causal``), and its other methods (a KV cache's ``extend``, ...) run under the
    autocast too."""

    def __init__(self, model: torch.nn.Module, pipeline: Pipeline):
        self.model, self.pipeline = model, pipeline
        # capabilities the network declares (ddkit.Denoiser) stay visible to samplers and correctors
        for name in ("hollow", "evaluations_per_call"):
            if hasattr(model, name):
                setattr(self, name, getattr(model, name))

    def __call__(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        with self.pipeline.autocast():
            return self.model(x_t, t)

    def __getattr__(self, name: str) -> Any:
        value = getattr(self.model, name)
        if not callable(value):
            return value

        def under_autocast(*args: Any, **kwargs: Any) -> Any:
            with self.pipeline.autocast():
                return value(*args, **kwargs)

        return under_autocast
