"""Loading a pipeline: YAML through omegaconf, ``key.path=value`` overrides, safe
interpolation, then pydantic validation.

Safety: YAML is parsed with a safe loader (no ``!!python`` tags), and interpolations may only
reference other keys (``${data.seq_len}``) or use the resolvers in
:data:`ALLOWED_RESOLVERS`; any other resolver, even one some library registered globally, is
rejected before resolution, so a pipeline file never runs code.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue, OmegaConfBaseException
from pydantic import ValidationError
from pydantic_core import PydanticUndefined

from .errors import ConfigError, format_validation_error, show_value
from .schema import COMPONENT_FIELDS, PipelineConfig, set_components, validate_components

#: interpolation resolvers a pipeline may use: environment variables and key selection
ALLOWED_RESOLVERS = frozenset({"oc.env", "oc.select"})
_RESOLVER = re.compile(r"\$\{\s*([A-Za-z_][\w.\-]*)\s*:")
_OVERRIDE_KEY = re.compile(r"^[A-Za-z_][\w\-]*(\.[A-Za-z_][\w\-]*|\[\d+\])*$")


def _check_interpolations(node: Any, path: str, problems: list[str]) -> None:
    if isinstance(node, Mapping):
        for key, value in node.items():
            _check_interpolations(value, f"{path}.{key}" if path else str(key), problems)
    elif isinstance(node, list):
        for i, value in enumerate(node):
            _check_interpolations(value, f"{path}[{i}]", problems)
    elif isinstance(node, str):
        for resolver in _RESOLVER.findall(node):
            if resolver not in ALLOWED_RESOLVERS:
                problems.append(
                    f"{path}: interpolation resolver {resolver!r} is not allowed (got {show_value(node)}); "
                    f"use ${{path.to.key}} or {', '.join(sorted(ALLOWED_RESOLVERS))}")


def _missing_keys(cfg: DictConfig | ListConfig, path: str = "") -> list[str]:
    found = []
    items = cfg.items_ex(resolve=False) if isinstance(cfg, DictConfig) else enumerate(cfg)
    for key, _ in items:
        where = f"{path}[{key}]" if isinstance(cfg, ListConfig) else (f"{path}.{key}" if path else str(key))
        if OmegaConf.is_missing(cfg, key):
            found.append(where)
            continue
        child = cfg._get_node(key)
        if isinstance(child, (DictConfig, ListConfig)) and not child._is_none():
            found += _missing_keys(child, where)
    return found


def _expand_components(cfg: DictConfig) -> None:
    """Write the default of every absent top-level component section, and turn a component
    given by name into ``{name: ...}``, so that ``loss.t_min=0.01`` can override a default."""
    for path, _ in COMPONENT_FIELDS:
        parent = cfg
        for part in path[:-1]:
            parent = parent.get(part) if isinstance(parent, DictConfig) else None
        if not isinstance(parent, DictConfig):
            continue
        key = path[-1]
        if key not in parent and len(path) == 1 and key in PipelineConfig.model_fields:
            default = PipelineConfig.model_fields[key].default
            if default is not None and default is not PydanticUndefined:
                parent[key] = default
        if key in parent and not OmegaConf.is_missing(parent, key):
            node = parent._get_node(key)
            value = node._value() if not isinstance(node, (DictConfig, ListConfig)) else None
            if isinstance(value, str) and "${" not in value:
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


def apply_overrides(cfg: DictConfig, overrides: Sequence[str]) -> DictConfig:
    """Apply ``key.path=value`` overrides in order. A mapping value replaces the whole node
    (``sampler={name: first_hitting, steps: 64}``); anything else sets one value."""
    for text in overrides:
        key, value = parse_override(text)
        try:
            OmegaConf.update(cfg, key, value, merge=False, force_add=True)
        except OmegaConfBaseException as exc:
            raise ConfigError(f"override {text!r}: {exc}".splitlines()[0]) from None
    return cfg


def load_raw(source: str | Path | Mapping[str, Any], overrides: Sequence[str] = ()) -> dict[str, Any]:
    """Parse a YAML file (or take a mapping), apply overrides, check and resolve
    interpolations; returns a plain dict (not yet validated)."""
    where = str(source) if isinstance(source, (str, Path)) else None
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
    _expand_components(cfg)
    apply_overrides(cfg, overrides)
    problems: list[str] = []
    _check_interpolations(OmegaConf.to_container(cfg, resolve=False), "", problems)
    problems += [f"{key}: missing required value (???)" for key in _missing_keys(cfg)]
    if problems:
        raise ConfigError(problems, source=where)
    try:
        return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    except MissingMandatoryValue as exc:
        raise ConfigError(f"{exc.full_key}: missing required value (???)", source=where) from None
    except OmegaConfBaseException as exc:
        key = getattr(exc, "full_key", None) or "<root>"
        raise ConfigError(f"{key}: {str(exc).splitlines()[0]}", source=where) from None


def load_pipeline(source: str | Path | Mapping[str, Any], overrides: Sequence[str] = ()) -> PipelineConfig:
    """Load, override, resolve and validate a pipeline; every component's parameters are
    checked by its plugin. Raises :class:`ConfigError` listing every problem found."""
    where = str(source) if isinstance(source, (str, Path)) else None
    raw = load_raw(source, overrides)
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


def to_yaml(data: Mapping[str, Any]) -> str:
    """A plain mapping as YAML (block style, keys in their given order)."""
    return yaml.safe_dump(dict(data), sort_keys=False, allow_unicode=True, default_flow_style=False, width=100)
