"""Configuration machinery that any config schema can use: loading through omegaconf (files,
``key.path=value`` overrides, safe interpolation only), components checked against their
plugins' own parameter models, and error messages that name the dotted path, the bad value
and what was expected. The pipeline's schema lives next to its builder, in
:mod:`ddkit.contrib.pipeline_config`.

Example::

    >>> from ddkit.config import load_raw, check_component
    >>> raw = load_raw({"schedule": "polynomial"}, ["schedule.exponent=2"], components=[("schedule",)])
    >>> check_component("schedule", raw["schedule"], where="schedule").spec()
    {'name': 'polynomial', 'exponent': 2.0}
"""

from .components import CheckedComponent, ComponentSpec, check_component, component_json_schema, get_path
from .errors import ConfigError, format_parameter_error, format_validation_error
from .loading import apply_overrides, load_raw, parse_override, to_yaml

__all__ = [
    "CheckedComponent",
    "ComponentSpec",
    "ConfigError",
    "apply_overrides",
    "check_component",
    "component_json_schema",
    "format_parameter_error",
    "format_validation_error",
    "get_path",
    "load_raw",
    "parse_override",
    "to_yaml",
]
