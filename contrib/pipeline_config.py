"""The pipeline's config: its sections, what the pipeline passes to each component, and the
loading of a pipeline file.

A pipeline has the sections ``data``, ``model``, ``process``, ``parameterization``, ``loss``,
``train``, ``eval``, ``sampler``, ``sample`` and ``output``. The component sections
(:data:`COMPONENT_FIELDS`) are ``{name: <plugin name>, ...parameters}`` (or just the name),
checked against the plugin's own parameter model. The pipeline passes some parameters itself
(:data:`PIPELINE_PROVIDED`, the one statement of that rule): the vocabulary size from the
tokenizer to the process and the model, the process and the parameterization to the loss,
the parameterization to the sampler.

Each component is validated once, with the values it will receive. :func:`load_pipeline`
validates every component whose values are known from the file alone; the vocabulary is
known when the tokenizer needs no corpus (``data.tokenizer`` with an alphabet or a preset,
``byte``, or the data set's own tokenizer; every resolved config). A tokenizer that is fitted
on the corpus leaves the process, the model and the loss to :meth:`Pipeline.build
<ddkit.contrib.pipeline.Pipeline.build>`, which validates them with the fitted vocabulary.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator, model_validator
from pydantic_core import PydanticUndefined

import ddkit
from ddkit.config import (CheckedComponent, ComponentSpec, ConfigError, check_component, component_json_schema,
                          format_validation_error, get_path, load_raw)
from ddkit.registry import split_spec


#: the largest seed: seeds are 64-bit integers (``torch.Generator.manual_seed``), and the pipeline
#: seeds its generators with ``seed + 1`` ... ``seed + 5``
SEED_MAX = 2**63 - 1
#: the device names a pipeline and ``--device`` take
DEVICE_PATTERN = r"^(auto|cpu|cuda(:\d+)?|mps)$"
#: a coefficient of AdamW's moving averages
AdamBeta = Annotated[float, Field(ge=0, lt=1)]


class Section(BaseModel):
    # a float in a pipeline is a finite number: NaN and infinity are refused where they are written
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class DataConfig(Section):
    dataset: ComponentSpec("dataset") = Field(description="data set plugin, e.g. pydoc_topics, text8, textfile, markov")
    tokenizer: ComponentSpec("tokenizer") | None = Field(
        None, description="tokenizer plugin (char, byte); default: the data set's own")
    seq_len: int = Field(128, ge=1, description="tokens per training window and evaluation chunk")


class DistributedConfig(Section):
    """Multi-process training under ``torchrun`` (a single process ignores this section); see
    :mod:`ddkit.contrib.distributed`."""

    strategy: Literal["ddp", "fsdp"] = Field(
        "ddp", description="ddp: every process holds the whole model (DistributedDataParallel); fsdp: FSDP2 "
                           "fully_shard shards parameters, gradients and optimizer state across processes")
    backend: Literal["auto", "nccl", "gloo"] = Field("auto", description="auto: nccl on CUDA, gloo on the CPU")
    find_unused_parameters: bool = Field(
        False, description="ddp: allow parameters that receive no gradient in a step (slower; needed only then)")
    timeout_s: float = Field(1800.0, gt=0, description="seconds a collective waits for the other processes")


class TrainConfig(Section):
    steps: int = Field(1000, ge=1, description="optimizer steps")
    batch_size: int = Field(32, ge=1, description="sequences per micro-batch")
    grad_accum: int = Field(1, ge=1, description="micro-batches per optimizer step")
    lr: float = Field(1e-3, gt=0, description="peak learning rate (AdamW)")
    lr_schedule: Literal["constant", "cosine"] = Field("cosine", description="after the warmup")
    warmup_steps: int = Field(100, ge=0, description="linear warmup from 0 to lr")
    min_lr_ratio: float = Field(0.1, ge=0, le=1, description="cosine decays to lr * min_lr_ratio")
    weight_decay: float = Field(0.0, ge=0)
    betas: tuple[AdamBeta, AdamBeta] = Field((0.9, 0.99), description="AdamW's (beta1, beta2), each in [0, 1)")
    grad_clip: float | None = Field(1.0, gt=0, description="max global gradient norm; null: off")
    ema_decay: float = Field(0.999, ge=0, lt=1, description="EMA of the weights for eval and sampling; 0: off")
    log_every: int = Field(50, ge=1, description="steps between metric lines")
    eval_every: int | None = Field(None, ge=1, description="steps between validation losses; null: at the end only")
    eval_batches: int = Field(4, ge=1, description="batches per validation loss during training")
    checkpoint_every: int | None = Field(None, ge=1, description="steps between checkpoints; null: by time only")
    checkpoint_interval_s: float | None = Field(
        600.0, gt=0, allow_inf_nan=False,
        description="also checkpoint once this many seconds of training passed since the last checkpoint; "
                    "null: by steps only")
    device: str = Field("auto", json_schema_extra={"pattern": DEVICE_PATTERN},
                        description="auto (cuda if available), cpu, cuda, cuda:N or mps")
    precision: Literal["auto", "fp32", "bf16"] = Field("auto", description="auto: bf16 autocast on CUDA, fp32 on CPU")
    progress: bool = Field(True, description="show a progress bar")
    compile: bool = Field(False, description="torch.compile the network for training (the first steps compile)")
    compile_backend: Literal["inductor", "aot_eager", "eager"] = Field(
        "inductor", description="torch.compile backend: inductor generates kernels; aot_eager and eager only "
                                "capture the graph (for debugging)")
    distributed: DistributedConfig = Field(default_factory=DistributedConfig,
                                           description="multi-process training under torchrun")

    @field_validator("device")
    @classmethod
    def _device_name(cls, value: str) -> str:
        if not re.fullmatch(DEVICE_PATTERN, value):
            raise ValueError("not a device; expected auto, cpu, cuda, cuda:N or mps")
        return value


class EvalConfig(Section):
    split: Literal["validation", "test", "train"] = "validation"
    time_samples: int = Field(8, ge=1, description="time draws per sequence for the ELBO")
    time_sampling: Literal["iid", "antithetic"] = Field(
        "antithetic", description="antithetic: the draws of one sequence are stratified over [t_min, 1]")
    batch_size: int = Field(64, ge=1, description="sequences per evaluation batch")
    max_sequences: int | None = Field(None, ge=1, description="evaluate at most this many chunks")
    discrete_steps: int | None = Field(None, ge=1, description="also report the discrete-time ELBO with T steps")
    left_to_right: bool = Field(False, description="also report the exact NLL of the masked model decoded left to "
                                                   "right, one token per step (N calls per batch)")


class SampleConfig(Section):
    num_samples: int = Field(8, ge=1)
    length: int | None = Field(None, ge=1, description="tokens per sample; default data.seq_len")
    prompt: str | None = Field(None, description="fixed prefix text")
    infill: str | None = Field(None, description="template; the blank character marks generated positions")
    blank: str = Field("_", min_length=1, max_length=1, description="blank character of an infill template")
    seed: int = Field(0, ge=0, le=SEED_MAX, description="seed of the sampling generator")
    show: bool = Field(True, description="record and print the denoising trajectory of the first sample")

    @model_validator(mode="after")
    def _one_prompt(self) -> SampleConfig:
        if self.prompt is not None and self.infill is not None:
            raise ValueError("give either prompt (a prefix) or infill (a template), not both")
        return self


class OutputConfig(Section):
    dir: str | None = Field(None, description="run directory; default runs/<name>")


class PipelineConfig(Section):
    """A whole experiment: data -> model -> process -> loss -> training -> evaluation -> sampling."""

    name: str = Field("run", pattern=r"^[\w.\-]+$", description="run name (default directory runs/<name>)")
    seed: int = Field(0, ge=0, le=SEED_MAX, description="seed of the initialisation, the data order and the noise")
    data: DataConfig
    model: ComponentSpec("model")
    process: ComponentSpec("process") = {"name": "masked", "schedule": "linear"}
    parameterization: ComponentSpec("parameterization") = "mean"
    loss: ComponentSpec("loss") = "continuous_elbo"
    train: TrainConfig = TrainConfig()
    eval: EvalConfig = EvalConfig()
    sampler: ComponentSpec("sampler") = {"name": "ancestral", "steps": 128}
    sample: SampleConfig = SampleConfig()
    output: OutputConfig = OutputConfig()

    #: component path -> the vocabulary size it was validated with (None: it takes none);
    #: components not listed are validated when the pipeline is built
    _checked: dict[str, int | None] = PrivateAttr(default_factory=dict)

    def unchecked(self, vocab_size: int) -> set[str]:
        """The component paths not yet validated with this vocabulary size."""
        return {".".join(path) for path, _ in COMPONENT_FIELDS
                if self._checked.get(".".join(path), -1) not in (None, vocab_size)}

    def mark_checked(self, where: str, vocab_size: int | None = None) -> None:
        """Record that the component at ``where`` is valid with ``vocab_size`` (``None``: it
        takes no vocabulary)."""
        self._checked[where] = vocab_size


#: (path in the pipeline, component kind), in the order they are validated and built: a
#: component comes after those whose values it receives
COMPONENT_FIELDS: tuple[tuple[tuple[str, ...], str], ...] = (
    (("data", "dataset"), "dataset"),
    (("data", "tokenizer"), "tokenizer"),
    (("process",), "process"),
    (("parameterization",), "parameterization"),
    (("model",), "model"),
    (("loss",), "loss"),
    (("sampler",), "sampler"),
)

#: What the pipeline passes to its components, for each kind: a component receives those of
#: these parameters that its parameter model declares. ``vocab_size`` is the tokenizer's
#: vocabulary; ``process`` and ``parameterization`` are the pipeline's own (one object each,
#: shared by the loss and the sampler). A sampler whose ``sample`` takes ``parameterization=``
#: is also given it there (:meth:`ddkit.Sampler.takes_parameterization`).
PIPELINE_PROVIDED: dict[str, tuple[str, ...]] = {
    "process": ("vocab_size",),
    "model": ("vocab_size",),
    "loss": ("process", "parameterization"),
    "sampler": ("parameterization",),
}
#: where each provided value comes from (for messages)
PROVIDED_FROM = {
    "vocab_size": "the pipeline from the tokenizer's vocabulary",
    "process": "the pipeline from its 'process' section",
    "parameterization": "the pipeline from its 'parameterization' section",
}
#: provided parameters that a file may also write; the pipeline checks that they agree
SETTABLE = frozenset({"vocab_size"})


def provided_values(kind: str, record: ddkit.ComponentRecord, values: Mapping[str, Any]) -> dict[str, Any]:
    """The ``values`` that the pipeline passes to a component of ``kind`` (its parameters in
    :data:`PIPELINE_PROVIDED` that its parameter model declares)."""
    return {key: values[key] for key in PIPELINE_PROVIDED.get(kind, ())
            if key in record.params.model_fields and key in values}


def default_spec(path: tuple[str, ...]) -> Any:
    """The default of a top-level component section (``None`` for nested or required ones)."""
    if len(path) != 1:
        return None
    default = PipelineConfig.model_fields[path[0]].default
    return None if default is PydanticUndefined else default


def known_vocab_size(raw: Mapping[str, Any]) -> int | None:
    """The vocabulary size when the tokenizer needs no corpus: ``data.tokenizer`` with its
    alphabet (or a preset, or bytes), or the data set's own tokenizer; else ``None``."""
    tokenizer_spec, dataset_spec = get_path(raw, ("data", "tokenizer")), get_path(raw, ("data", "dataset"))
    if not all(spec is None or isinstance(spec, (str, Mapping)) for spec in (tokenizer_spec, dataset_spec)):
        return None  # not shaped like a component: the schema reports it
    try:
        if tokenizer_spec is not None:
            tokenizer = ddkit.build("tokenizer", tokenizer_spec)
        elif dataset_spec is not None:
            tokenizer = ddkit.build("dataset", dataset_spec).default_tokenizer()
        else:
            return None
    except (ddkit.DDKitError, ValueError, TypeError, OSError, OverflowError, NotImplementedError):
        return None  # a broken data section is reported by its own check
    return None if tokenizer.needs_fit else tokenizer.vocab_size


def check_components(raw: Mapping[str, Any], *, vocab_size: int | None,
                     only: Collection[str] | None = None) -> tuple[list[str], dict[str, CheckedComponent],
                                                                     dict[str, int | None]]:
    """Validate the components of a raw pipeline mapping, each with the values the pipeline
    passes it (:data:`PIPELINE_PROVIDED`); ``only`` limits the check to those dotted paths
    (the others were validated before).

    Returns ``(problems, checked, vocabulary)``: one line per problem; the valid components by
    dotted path; and for each of them the vocabulary size it was validated with (``None``: it
    takes none). A component that needs the vocabulary while ``vocab_size`` is ``None`` (and
    does not write it), or needs a component left for later, is left out of all three.
    Components that are missing or not shaped like a component are left to the schema."""
    problems: list[str] = []
    checked: dict[str, CheckedComponent] = {}
    vocabulary: dict[str, int | None] = {}
    values: dict[str, Any] = {} if vocab_size is None else {"vocab_size": vocab_size}
    later: set[str] = set() if vocab_size is not None else {"vocab_size"}
    uses_vocab: set[str] = {"vocab_size"}  # pipeline values that depend on the vocabulary
    registry = ddkit.get_registry()
    for path, kind in COMPONENT_FIELDS:
        where = ".".join(path)
        spec = get_path(raw, path)
        spec = default_spec(path) if spec is None else spec
        if spec is None:
            continue
        try:
            name, given = split_spec(spec)
            declared = set(PIPELINE_PROVIDED.get(kind, ())) & set(registry.get(kind, name).params.model_fields)
        except (ddkit.DDKitError, ValueError):
            declared = set()  # reported by check_component
        else:
            if only is not None and where not in only:  # validated before: pass it on as it is
                passed = {k: values[k] for k in declared if k in values and k not in given}
                values[kind] = {"name": name, **given, **passed}
                if declared & uses_vocab:
                    uses_vocab.add(kind)
                continue
            if any(key in later and key not in given for key in declared):
                later.add(kind)
                continue
        result = check_component(kind, spec, where=where, owned={k: PROVIDED_FROM[k] for k in declared},
                                 provided={k: values[k] for k in declared if k in values}, settable=SETTABLE)
        problems += result.problems
        if not result.ok:
            continue
        checked[where] = result
        takes_vocab = {k for k in declared if k not in (SETTABLE & set(given))} & uses_vocab
        vocabulary[where] = vocab_size if takes_vocab else None
        if takes_vocab:
            uses_vocab.add(kind)
        values[kind] = {**result.spec(), **{k: values[k] for k in result.provided}}
    return problems, checked, vocabulary


def set_components(cfg: PipelineConfig, checked: Mapping[str, CheckedComponent],
                   vocabulary: Mapping[str, int | None]) -> PipelineConfig:
    """Write validated components (every default filled in) into a config, and remember the
    vocabulary each was validated with."""
    for where, result in checked.items():
        node: Any = cfg
        *parents, last = where.split(".")
        for part in parents:
            node = getattr(node, part)
        setattr(node, last, result.spec())
        cfg.mark_checked(where, vocabulary[where])
    return cfg


def load_pipeline(source: str | Path | Mapping[str, Any], overrides: Sequence[str] = (), *,
                  interpolate: bool = True) -> PipelineConfig:
    """Load, override, resolve and validate a pipeline; every component's parameters are
    checked by its plugin (see the module docstring for when). Raises
    :class:`~ddkit.config.ConfigError` listing every problem found."""
    where = str(source) if isinstance(source, (str, Path)) else None
    components = [path for path, _ in COMPONENT_FIELDS]
    defaults = {path: default_spec(path) for path in components if default_spec(path) is not None}
    raw = load_raw(source, overrides, interpolate=interpolate, components=components, defaults=defaults)
    problems: list[str] = []
    cfg = None
    try:
        cfg = PipelineConfig.model_validate(raw)
    except ValidationError as exc:
        problems += format_validation_error(exc, model=PipelineConfig)
    component_problems, checked, vocabulary = check_components(raw, vocab_size=known_vocab_size(raw))
    # a section not shaped like a component is reported by the schema as well, with its value
    problems += [line for line in component_problems if not any(seen.startswith(line) for seen in problems)]
    if problems or cfg is None:
        raise ConfigError(problems, source=where)
    return set_components(cfg, checked, vocabulary)


def load_resolved(config: Mapping[str, Any], overrides: Sequence[str] = ()) -> PipelineConfig:
    """Validate a config that was resolved before (a checkpoint's metadata, the config in
    ``samples.json``) without interpolating it again: every string is a value, ``${``
    included, and overrides set values as they are written."""
    return load_pipeline(config, overrides, interpolate=False)


def pipeline_json_schema() -> dict[str, Any]:
    """JSON Schema of a pipeline file; each component field lists the installed plugins of
    its kind with their own parameter schemas (without what the pipeline passes itself)."""
    schema = component_json_schema(PipelineConfig.model_json_schema(), owned=PIPELINE_PROVIDED, settable=SETTABLE)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "ddkit pipeline"
    return schema
