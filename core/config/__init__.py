"""Pipeline configuration: the pydantic schema of a pipeline YAML, its loading through
omegaconf (files, ``key.path=value`` overrides, safe interpolation only) and error messages
that name the dotted path, the bad value and what was expected.

Example::

    >>> from ddkit.config import load_pipeline
    >>> cfg = load_pipeline({"data": {"dataset": "pydoc_topics"},
    ...                      "model": {"name": "dit", "width": 64}},
    ...                     overrides=["train.steps=10"])
    >>> cfg.train.steps, cfg.model["width"]
    (10, 64)
"""

from .errors import ConfigError, format_validation_error
from .loading import apply_overrides, load_pipeline, load_raw, load_resolved, parse_override, to_yaml
from .schema import (
    COMPONENT_FIELDS,
    PIPELINE_PROVIDED,
    DataConfig,
    EvalConfig,
    OutputConfig,
    PipelineConfig,
    SampleConfig,
    TrainConfig,
    pipeline_json_schema,
    set_components,
    validate_components,
)

__all__ = [
    "COMPONENT_FIELDS",
    "PIPELINE_PROVIDED",
    "ConfigError",
    "DataConfig",
    "EvalConfig",
    "OutputConfig",
    "PipelineConfig",
    "SampleConfig",
    "TrainConfig",
    "apply_overrides",
    "format_validation_error",
    "load_pipeline",
    "load_raw",
    "load_resolved",
    "parse_override",
    "pipeline_json_schema",
    "set_components",
    "to_yaml",
    "validate_components",
]
