"""The pydantic schema of a pipeline YAML.

A pipeline has the sections ``data``, ``model``, ``process``, ``parameterization``,
``loss``, ``train``, ``eval``, ``sampler``, ``sample`` and ``output``. Sections that are
components (``data.dataset``, ``data.tokenizer``, ``model``, ``process``,
``parameterization``, ``loss``, ``sampler``) are ``{name: <plugin name>, ...parameters}``
(or just the name) and are checked against the plugin's own parameter model by
:func:`validate_components`. The pipeline passes some parameters itself
(:data:`PIPELINE_PROVIDED`): the vocabulary size comes from the tokenizer, the loss gets the
``process`` and ``parameterization`` sections, the sampler the ``parameterization``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import (BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, WithJsonSchema,
                      model_validator)
from pydantic_core import PydanticUndefined

from ..errors import DDKitError, ParameterError
from ..registry import get_registry, split_spec
from .errors import format_validation_error, show_value


def _component_shape(value: Any) -> Any:
    if isinstance(value, str):
        return value
    if isinstance(value, Mapping):
        if not isinstance(value.get("name"), str):
            raise ValueError("a component needs a string 'name' (the plugin to use)")
        return dict(value)
    raise ValueError("a component is a plugin name or a mapping {name: <plugin>, ...parameters}")


def ComponentSpec(kind: str) -> Any:  # noqa: N802 - used as a type annotation
    """A component of ``kind`` in a pipeline: shape-checked here, parameters checked against
    the plugin's own model by :func:`validate_components`."""
    return Annotated[str | dict[str, Any], BeforeValidator(_component_shape),
                     WithJsonSchema({"x-ddkit-kind": kind})]


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DataConfig(Section):
    dataset: ComponentSpec("dataset") = Field(description="data set plugin, e.g. pydoc_topics, text8, textfile, markov")
    tokenizer: ComponentSpec("tokenizer") | None = Field(
        None, description="tokenizer plugin (char, byte); default: the data set's own")
    seq_len: int = Field(128, ge=1, description="tokens per training window and evaluation chunk")


class TrainConfig(Section):
    steps: int = Field(1000, ge=1, description="optimizer steps")
    batch_size: int = Field(32, ge=1, description="sequences per micro-batch")
    grad_accum: int = Field(1, ge=1, description="micro-batches per optimizer step")
    lr: float = Field(1e-3, gt=0, description="peak learning rate (AdamW)")
    lr_schedule: Literal["constant", "cosine"] = Field("cosine", description="after the warmup")
    warmup_steps: int = Field(100, ge=0, description="linear warmup from 0 to lr")
    min_lr_ratio: float = Field(0.1, ge=0, le=1, description="cosine decays to lr * min_lr_ratio")
    weight_decay: float = Field(0.0, ge=0)
    betas: tuple[float, float] = (0.9, 0.99)
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
    device: str = Field("auto", pattern=r"^(auto|cpu|cuda(:\d+)?|mps)$", description="auto: cuda if available")
    precision: Literal["auto", "fp32", "bf16"] = Field("auto", description="auto: bf16 autocast on CUDA, fp32 on CPU")
    progress: bool = Field(True, description="show a progress bar")


class EvalConfig(Section):
    split: Literal["validation", "test", "train"] = "validation"
    time_samples: int = Field(8, ge=1, description="time draws per sequence for the ELBO")
    time_sampling: Literal["iid", "antithetic"] = Field(
        "antithetic", description="antithetic: the draws of one sequence are stratified over [t_min, 1]")
    batch_size: int = Field(64, ge=1, description="sequences per evaluation batch")
    max_sequences: int | None = Field(None, ge=1, description="evaluate at most this many chunks")
    discrete_steps: int | None = Field(None, ge=1, description="also report the discrete-time ELBO with T steps")


class SampleConfig(Section):
    num_samples: int = Field(8, ge=1)
    length: int | None = Field(None, ge=1, description="tokens per sample; default data.seq_len")
    prompt: str | None = Field(None, description="fixed prefix text")
    infill: str | None = Field(None, description="template; the blank character marks generated positions")
    blank: str = Field("_", min_length=1, max_length=1, description="blank character of an infill template")
    seed: int = 0
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
    seed: int = 0
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


#: (path in the pipeline, component kind)
COMPONENT_FIELDS: tuple[tuple[tuple[str, ...], str], ...] = (
    (("data", "dataset"), "dataset"),
    (("data", "tokenizer"), "tokenizer"),
    (("process",), "process"),
    (("parameterization",), "parameterization"),
    (("model",), "model"),
    (("loss",), "loss"),
    (("sampler",), "sampler"),
)

#: parameters the pipeline passes to components of a kind (if the plugin's model has them);
#: ``vocab_size`` may also be written in the YAML, where it must agree with the data
PIPELINE_PROVIDED: dict[str, tuple[str, ...]] = {
    "process": ("vocab_size",),
    "model": ("vocab_size",),
    "loss": ("process", "parameterization"),
    "sampler": ("parameterization",),
}
MAY_BE_WRITTEN = frozenset({"vocab_size"})
_PLACEHOLDER_VOCAB = 2


def get_path(raw: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    node: Any = raw
    for part in path:
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def validate_components(raw: Mapping[str, Any]) -> tuple[list[str], dict[tuple[str, ...], dict[str, Any]]]:
    """Check every component of a raw pipeline mapping against its plugin's parameter model.

    Returns ``(problems, resolved)``: one line per problem, starting with the dotted path;
    and for every valid component its full spec ``{name, **parameters}`` with defaults
    filled in (pipeline-provided parameters left out unless written in the file).
    Components that are missing or not shaped like a component are left to the schema."""
    registry = get_registry()
    problems: list[str] = []
    resolved: dict[tuple[str, ...], dict[str, Any]] = {}
    valid: dict[str, Any] = {}
    for path, kind in COMPONENT_FIELDS:
        spec = get_path(raw, path)
        if spec is None and len(path) == 1:
            spec = PipelineConfig.model_fields[path[0]].get_default()
        if spec is None or spec is PydanticUndefined:
            continue
        try:
            name, params = split_spec(_component_shape(spec))
        except (ValueError, ParameterError):
            continue  # reported by the schema
        where = ".".join(path)
        try:
            record = registry.get(kind, name)
        except DDKitError as exc:  # unknown name (with "did you mean") or a duplicate
            problems.append(f"{where}.name: {exc}")
            continue
        injected: dict[str, Any] = {}
        skip_errors: set[str] = set()
        for key in PIPELINE_PROVIDED.get(kind, ()):
            if key not in record.params.model_fields:
                continue
            if key in params:
                if key not in MAY_BE_WRITTEN:
                    problems.append(f"{where}.{key}: set by the pipeline from its '{key}' section; "
                                    f"remove it here (got {show_value(params[key])})")
                continue
            if key == "vocab_size":
                injected[key] = _PLACEHOLDER_VOCAB
            elif key in valid:
                injected[key] = valid[key]
            else:
                skip_errors.add(key)  # that section is broken itself; reported there
        given = {k: v for k, v in params.items() if k not in PIPELINE_PROVIDED.get(kind, ()) or k in MAY_BE_WRITTEN}
        try:
            model = record.params.model_validate({**given, **injected})
        except ValidationError as exc:
            lines = format_validation_error(exc, prefix=where, model=record.params, what=f" ({kind} {name!r})")
            problems += [line for line in lines if not any(line.startswith(f"{where}.{k}") for k in skip_errors)]
            continue
        except (ParameterError, ValueError) as exc:
            problems.append(f"{where}: {exc}")
            continue
        dumped = model.model_dump(mode="json")
        resolved[path] = {"name": name, **{k: v for k, v in dumped.items() if k not in injected and k not in skip_errors}}
        valid[kind] = {"name": name, **{k: v for k, v in dumped.items() if k not in skip_errors}}
    return problems, resolved


def set_components(cfg: PipelineConfig, resolved: Mapping[tuple[str, ...], dict[str, Any]]) -> PipelineConfig:
    """Write validated component specs into a config."""
    for path, spec in resolved.items():
        node: Any = cfg
        for part in path[:-1]:
            node = getattr(node, part)
        setattr(node, path[-1], spec)
    return cfg


def pipeline_json_schema() -> dict[str, Any]:
    """JSON Schema of a pipeline file; each component field lists the installed plugins of
    its kind with their own parameter schemas."""
    schema = PipelineConfig.model_json_schema()
    registry = get_registry()

    def component_schema(kind: str, description: str | None) -> dict[str, Any]:
        options: list[dict[str, Any]] = [{"type": "string", "enum": registry.names(kind)}]
        for record in registry.records(kind):
            params = record.params.model_json_schema()
            provided = set(PIPELINE_PROVIDED.get(kind, ())) - MAY_BE_WRITTEN
            properties = {k: v for k, v in params.get("properties", {}).items() if k not in provided}
            required = [k for k in params.get("required", []) if k not in PIPELINE_PROVIDED.get(kind, ())]
            option = {"type": "object", "title": f"{kind} {record.name}", "description": record.summary,
                      "properties": {"name": {"const": record.name}, **properties},
                      "required": ["name", *required], "additionalProperties": False}
            if "$defs" in params:
                option["$defs"] = params["$defs"]
            options.append(option)
        out: dict[str, Any] = {"anyOf": options}
        if description:
            out["description"] = description
        return out

    def patch(node: Any) -> Any:
        if isinstance(node, dict):
            kind = node.get("x-ddkit-kind")
            if kind is not None:
                return component_schema(kind, node.get("description"))
            if "anyOf" in node:  # Optional[component]
                for option in node["anyOf"]:
                    if isinstance(option, dict) and "x-ddkit-kind" in option:
                        return {"anyOf": [component_schema(option["x-ddkit-kind"], None), {"type": "null"}],
                                **({"description": node["description"]} if "description" in node else {})}
            return {k: patch(v) for k, v in node.items()}
        if isinstance(node, list):
            return [patch(v) for v in node]
        return node

    schema = patch(schema)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "ddkit pipeline"
    return schema
