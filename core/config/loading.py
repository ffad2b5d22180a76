"""Loading a pipeline: YAML through omegaconf, ``key.path=value`` overrides, safe
interpolation, then pydantic validation.

Safety: YAML is parsed with a safe loader (no ``!!python`` tags). OmegaConf only parses: the
config becomes plain data right after parsing, and its interpolations are resolved by
:mod:`ddkit.config.interpolation` with a private resolver table (other keys, ``oc.env`` and
``oc.select``), never by OmegaConf, whose global table any library can extend; a resolver
must be named literally. So a pipeline file or an override never runs code.

A config that was resolved before (a checkpoint's metadata) is loaded with
:func:`load_resolved`, which never interpolates: its strings are values, ``${`` included.
:func:`to_yaml` escapes such a literal, so a run directory's ``config.yaml`` loads back, as a
pipeline file, to the same values.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException
from pydantic import ValidationError
from pydantic_core import PydanticUndefined

from .errors import ConfigError, format_validation_error
from .interpolation import PIPELINE_RESOLVERS, escape_interpolations, resolve_interpolations
from .schema import COMPONENT_FIELDS, PipelineConfig, set_components, validate_components

#: interpolation resolvers a pipeline may use: environment variables and key selection
ALLOWED_RESOLVERS = frozenset(PIPELINE_RESOLVERS)
_OVERRIDE_KEY = re.compile(r"^[A-Za-z_][\w\-]*(\.[A-Za-z_][\w\-]*|\[\d+\])*$")
_KEY_PART = re.compile(r"\[(\d+)\]|([^.\[\]]+)")
_MISSING = "???"  # OmegaConf's mark of a required value


def _missing_keys(node: Any, path: str = "") -> list[str]:
    if isinstance(node, dict):
        return [key for name, value in node.items()
                for key in _missing_keys(value, f"{path}.{name}" if path else str(name))]
    if isinstance(node, list):
        return [key for i, value in enumerate(node) for key in _missing_keys(value, f"{path}[{i}]")]
    return [path] if node == _MISSING else []


def _expand_components(cfg: dict[str, Any]) -> None:
    """Write the default of every absent top-level component section, and turn a component
    given by name into ``{name: ...}``, so that ``loss.t_min=0.01`` can override a default."""
    for path, _ in COMPONENT_FIELDS:
        parent: Any = cfg
        for part in path[:-1]:
            parent = parent.get(part) if isinstance(parent, dict) else None
        if not isinstance(parent, dict):
            continue
        key = path[-1]
        if key not in parent and len(path) == 1 and key in PipelineConfig.model_fields:
            default = PipelineConfig.model_fields[key].default
            if default is not None and default is not PydanticUndefined:
                parent[key] = copy.deepcopy(default)
        value = parent.get(key)
        if isinstance(value, str) and value != _MISSING and "${" not in value:
            parent[key] = {"name": value}


def parse_override(text: str) -> tuple[str, Any]:
    """``"train.lr=3e-4"`` -> ``("train.lr", 0.0003)``; the value is parsed as YAML (safely),
    so ``sampler={name: first_hitting}`` gives a mapping and ``key=`` gives ``None``."""
    if "=" not in text:
        raise ConfigError(f"override {text!r}: expected key.path=value")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not _OVERRIDE_KEY.match(key):
        raise ConfigError(f"override {text!r}: {key!r} is not a dotted key path like train.steps")
    try:
        value = OmegaConf.to_container(OmegaConf.from_dotlist([f"value={raw}"]), resolve=False)["value"]
    except (OmegaConfBaseException, yaml.YAMLError) as exc:
        raise ConfigError(f"override {text!r}: cannot parse the value: {exc}") from None
    return key, value


def apply_overrides(data: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Apply ``key.path=value`` overrides in order to a plain config, in place. A mapping value
    replaces the whole node (``sampler={name: first_hitting, steps: 64}``); anything else sets
    one value; missing or non-mapping nodes on the way become mappings."""
    for text in overrides:
        key, value = parse_override(text)
        parts = [index or name for index, name in _KEY_PART.findall(key)]
        node: Any = data
        for depth, part in enumerate(parts):
            if isinstance(node, list):
                if not part.isdigit() or int(part) >= len(node):
                    raise ConfigError(f"override {text!r}: {'.'.join(parts[:depth])} is a list of {len(node)} "
                                      f"items (got index {part})")
                part = int(part)
            if depth == len(parts) - 1:
                node[part] = value
                break
            child = node[part] if isinstance(node, list) else node.get(part)
            if not isinstance(child, (dict, list)):
                child = node[part] = {}
            node = child
    return data


def load_raw(source: str | Path | Mapping[str, Any], overrides: Sequence[str] = (), *,
             interpolate: bool = True) -> dict[str, Any]:
    """Parse a YAML file (or take a mapping), apply overrides, resolve interpolations (unless
    ``interpolate`` is false: a resolved config); returns a plain dict (not yet validated)."""
    where = str(source) if isinstance(source, (str, Path)) else None
    if not interpolate:  # a resolved config is plain data already: OmegaConf would parse its strings
        if not isinstance(source, Mapping):
            raise ConfigError(f"a resolved config is a mapping (a checkpoint's config), not {source!r}")
        return apply_overrides(copy.deepcopy(dict(source)), overrides)
    try:
        if isinstance(source, (str, Path)):
            path = Path(source)
            if not path.is_file():
                raise ConfigError(f"no pipeline file at {path}")
            cfg = OmegaConf.create(path.read_text(encoding="utf-8"))
        else:
            cfg = OmegaConf.create(dict(source))
    except ConfigError:
        raise
    except (yaml.YAMLError, OmegaConfBaseException) as exc:
        raise ConfigError(f"cannot parse YAML: {exc}", source=where) from None
    if not isinstance(cfg, DictConfig):
        raise ConfigError("a pipeline file must be a mapping of sections", source=where)
    # plain data from here on: OmegaConf resolves nothing (see the module docstring)
    data = OmegaConf.to_container(cfg, resolve=False)
    _expand_components(data)
    apply_overrides(data, overrides)
    missing = [f"{key}: missing required value (???)" for key in _missing_keys(data)]
    if missing:
        raise ConfigError(missing, source=where)
    return resolve_interpolations(data, source=where)


def load_pipeline(source: str | Path | Mapping[str, Any], overrides: Sequence[str] = (), *,
                  interpolate: bool = True) -> PipelineConfig:
    """Load, override, resolve and validate a pipeline; every component's parameters are
    checked by its plugin. Raises :class:`ConfigError` listing every problem found."""
    where = str(source) if isinstance(source, (str, Path)) else None
    raw = load_raw(source, overrides, interpolate=interpolate)
    problems: list[str] = []
    cfg = None
    try:
        cfg = PipelineConfig.model_validate(raw)
    except ValidationError as exc:
        problems += format_validation_error(exc, model=PipelineConfig)
    component_problems, resolved = validate_components(raw)
    problems += component_problems
    if problems or cfg is None:
        raise ConfigError(problems, source=where)
    return set_components(cfg, resolved)


def load_resolved(config: Mapping[str, Any], overrides: Sequence[str] = ()) -> PipelineConfig:
    """Validate a config that was resolved before (a checkpoint's metadata, the config in
    ``samples.json``) without interpolating it again: every string is a value, ``${``
    included, and overrides set values as they are written."""
    return load_pipeline(config, overrides, interpolate=False)


def to_yaml(data: Mapping[str, Any]) -> str:
    """A resolved config as YAML (block style, keys in their given order) with every literal
    ``${`` escaped, so that the text loads back as a pipeline file to the same values."""
    return yaml.safe_dump(escape_interpolations(dict(data)), sort_keys=False, allow_unicode=True,
                          default_flow_style=False, width=100)
