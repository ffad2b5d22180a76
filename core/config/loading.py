"""Loading a config: YAML through omegaconf, ``key.path=value`` overrides and safe
interpolation, giving plain data for a schema to validate (the pipeline's schema and its
``load_pipeline`` are in :mod:`ddkit.contrib.pipeline_config`).

Safety: YAML is parsed with a safe loader (no ``!!python`` tags). OmegaConf only parses: the
config becomes plain data right after parsing, and its interpolations are resolved by
:mod:`ddkit.config.interpolation` with a private resolver table (other keys, ``oc.env`` and
``oc.select``), never by OmegaConf, whose global table any library can extend; a resolver
must be named literally. So a pipeline file or an override never runs code.

A config that was resolved before (a checkpoint's metadata) is loaded with
``interpolate=False``, which never interpolates: its strings are values, ``${`` included.
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

from .errors import ConfigError
from .interpolation import PIPELINE_RESOLVERS, escape_interpolations, resolve_interpolations

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


def _expand_components(cfg: dict[str, Any], components: Sequence[tuple[str, ...]],
                       defaults: Mapping[tuple[str, ...], Any]) -> None:
    """Write the default of every absent component section, and turn a component given by
    name into ``{name: ...}``, so that ``loss.t_min=0.01`` can override a default."""
    for path in components:
        parent: Any = cfg
        for part in path[:-1]:
            parent = parent.get(part) if isinstance(parent, dict) else None
        if not isinstance(parent, dict):
            continue
        key = path[-1]
        if key not in parent and defaults.get(path) is not None:
            parent[key] = copy.deepcopy(defaults[path])
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
    except (OmegaConfBaseException, yaml.YAMLError) as exc:  # the first line: the rest names OmegaConf's node
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"override {text!r}: cannot parse the value: {reason}") from None
    return key, value


def apply_overrides(data: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Apply ``key.path=value`` overrides in order to a plain config, in place. A mapping value
    replaces the whole node (``sampler={name: first_hitting, steps: 64}``); anything else sets
    one value; missing or non-mapping nodes on the way become mappings, a plugin name ``n``
    becoming ``{name: n}`` (so ``process.schedule.exponent=2`` keeps the schedule's name)."""
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
            if isinstance(child, str) and child != _MISSING and "${" not in child:
                child = node[part] = {"name": child}  # a component given by name: set one parameter
            elif not isinstance(child, (dict, list)):
                child = node[part] = {}
            node = child
    return data


def load_raw(source: str | Path | Mapping[str, Any], overrides: Sequence[str] = (), *,
             interpolate: bool = True, components: Sequence[tuple[str, ...]] = (),
             defaults: Mapping[tuple[str, ...], Any] | None = None) -> dict[str, Any]:
    """Parse a YAML file (or take a mapping), apply overrides, resolve interpolations (unless
    ``interpolate`` is false: a resolved config); returns a plain dict (not yet validated).
    ``components`` are the paths of the schema's component sections: before the overrides,
    an absent one gets its entry in ``defaults`` and one given by name becomes
    ``{name: ...}``."""
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
    except OmegaConfBaseException as exc:  # its message spans lines: the reason, then the key and node type
        key = getattr(exc, "full_key", None)
        value = f" {exc.value!r}" if isinstance(getattr(exc, "value", None), str) else ""
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"{key or '<root>'}: cannot parse the value{value}: {reason}", source=where) from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"cannot parse YAML: {' '.join(str(exc).split())}", source=where) from None
    if not isinstance(cfg, DictConfig):
        raise ConfigError("a pipeline file must be a mapping of sections", source=where)
    # plain data from here on: OmegaConf resolves nothing (see the module docstring)
    data = OmegaConf.to_container(cfg, resolve=False)
    _expand_components(data, components, defaults or {})
    apply_overrides(data, overrides)
    missing = [f"{key}: missing required value (???)" for key in _missing_keys(data)]
    if missing:
        raise ConfigError(missing, source=where)
    return resolve_interpolations(data, source=where)


def to_yaml(data: Mapping[str, Any]) -> str:
    """A resolved config as YAML (block style, keys in their given order) with every literal
    ``${`` escaped, so that the text loads back as a pipeline file to the same values."""
    return yaml.safe_dump(escape_interpolations(dict(data)), sort_keys=False, allow_unicode=True,
                          default_flow_style=False, width=100)
