"""The plugin manager: discovers plugins, collects component records, builds components.

There is one :class:`pluggy.PluginManager` per :class:`Registry`. Plugins come from the
``ddkit`` entry-point group (built-ins are published there by ddkit's own distribution) or
are registered programmatically with :meth:`Registry.add_plugin`. Each plugin registers
typed :class:`ComponentRecord` s through the hooks in :mod:`ddkit.hookspecs`.

Failure behaviour:

* a plugin that raises on import, or whose hook raises: a :class:`PluginWarning` naming it,
  and every other plugin keeps working (``strict=True`` or ``DDKIT_STRICT_PLUGINS=1``
  raises :class:`PluginError` instead);
* a hook implementation that matches no specification: :class:`PluginValidationError`;
* two components of one kind with one name: :class:`DuplicateComponentError` naming both
  sources, raised when that name is looked up (at load time in strict mode);
* ``DDKIT_DISABLE_PLUGIN_AUTOLOAD=1`` skips third-party entry points (built-ins stay).
"""

from __future__ import annotations

import difflib
import os
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib import metadata
from typing import Annotated, Any

import pluggy
from pydantic import BaseModel, BeforeValidator, ConfigDict, ValidationError, WithJsonSchema

from . import hookspecs
from .params import params_model
from .errors import (
    DuplicateComponentError,
    ParameterError,
    PluginError,
    PluginValidationError,
    PluginWarning,
    UnknownComponentError,
)

BUILTIN_SOURCE = "ddkit"
ENTRY_POINT_GROUP = "ddkit"
AUTOLOAD_ENV = "DDKIT_DISABLE_PLUGIN_AUTOLOAD"
STRICT_ENV = "DDKIT_STRICT_PLUGINS"


class NoParams(BaseModel):
    """Parameter model of a component that takes no parameters."""

    model_config = ConfigDict(extra="forbid")


@dataclass(frozen=True)
class ComponentRecord:
    """What a plugin registers: one buildable component."""

    kind: str
    name: str
    factory: Callable[..., Any]
    params: type[BaseModel]
    summary: str
    source: str
    plugin: str

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "name": self.name,
            "source": self.source,
            "plugin": self.plugin,
            "summary": self.summary,
            "params": self.params.model_json_schema(),
        }


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() not in ("", "0", "false", "no")


def split_spec(spec: str | Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """``"cosine"`` or ``{"name": "cosine", **params}`` -> ``("cosine", params)``."""
    if isinstance(spec, str):
        return spec, {}
    if isinstance(spec, Mapping):
        params = dict(spec)
        name = params.pop("name", None)
        if not isinstance(name, str):
            raise ParameterError(f"a component spec needs a string 'name', got {spec!r}")
        return name, params
    raise ParameterError(f"a component spec is a name or a mapping with 'name', got {spec!r}")


class Registry:
    """Component records from every loaded plugin, and the way to build them."""

    def __init__(self, *, strict: bool | None = None, autoload: bool | None = None):
        self.strict = _env_flag(STRICT_ENV) if strict is None else strict
        self.autoload = (not _env_flag(AUTOLOAD_ENV)) if autoload is None else autoload
        self._pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
        self._pm.add_hookspecs(hookspecs)
        self._sources: dict[str, str] = {}
        self._records: dict[tuple[str, str], ComponentRecord] = {}
        self._conflicts: dict[tuple[str, str], list[ComponentRecord]] = {}
        self.problems: list[str] = []

    # -- loading -------------------------------------------------------------------------

    def load_entry_points(self) -> Registry:
        """Load the ``ddkit`` entry points: always ddkit's own, others unless autoload is off."""
        for ep in sorted(metadata.entry_points(group=ENTRY_POINT_GROUP), key=_ep_order):
            source = ep.dist.name if ep.dist is not None else "<unknown distribution>"
            if source != BUILTIN_SOURCE and not self.autoload:
                continue
            try:
                plugin = ep.load()
            except Exception as exc:  # a broken third-party plugin must not break ddkit
                if source == BUILTIN_SOURCE:
                    raise
                self._problem(
                    f"plugin {ep.name!r} from distribution {source!r} failed to import "
                    f"({ep.value}): {type(exc).__name__}: {exc}"
                )
                continue
            self.add_plugin(plugin, name=f"{source}:{ep.name}", source=source)
        return self

    def add_plugin(self, plugin: Any, *, name: str, source: str) -> Registry:
        """Register a plugin object (usually a module) and collect its components."""
        if self._pm.is_registered(plugin):
            return self
        try:
            self._pm.register(plugin, name=name)
            self._pm.check_pending()
        except pluggy.PluginValidationError as exc:
            if self._pm.is_registered(plugin):
                self._pm.unregister(plugin)
            raise PluginValidationError(
                f"plugin {name!r} from distribution {source!r} is invalid: {exc}. "
                f"Known hooks: {', '.join(hookspecs.hook_name(k) for k in hookspecs.KINDS)}"
            ) from exc
        self._sources[name] = source
        for kind in hookspecs.KINDS:
            caller = getattr(self._pm.hook, hookspecs.hook_name(kind))
            for impl in caller.get_hookimpls():
                if impl.plugin is plugin:
                    self._collect(kind, impl, name, source)
        return self

    def _collect(self, kind: str, impl: Any, plugin_name: str, source: str) -> None:
        def register(
            name: str,
            factory: Callable[..., Any],
            *,
            params: type[BaseModel] | None = None,
            summary: str = "",
        ) -> None:
            if params is None:
                params = params_model(factory, name=f"{name}:{kind}Params")
            record = ComponentRecord(kind, name, factory, params, summary, source, plugin_name)
            self._add_record(record)

        try:
            impl.function(register=register)
        except (DuplicateComponentError, PluginValidationError):
            raise
        except Exception as exc:
            self._problem(
                f"plugin {plugin_name!r} from distribution {source!r} failed in "
                f"{hookspecs.hook_name(kind)}: {type(exc).__name__}: {exc}"
            )

    def _add_record(self, record: ComponentRecord) -> None:
        if not isinstance(record.name, str) or not record.name:
            raise PluginError(f"plugin {record.plugin!r} registered a {record.kind} without a name")
        if not (isinstance(record.params, type) and issubclass(record.params, BaseModel)):
            raise PluginError(
                f"{record.kind} {record.name!r} from {record.source!r}: params must be a "
                f"pydantic model class, got {record.params!r}"
            )
        key = (record.kind, record.name)
        if key in self._conflicts:
            self._conflicts[key].append(record)
        elif key in self._records:
            first = self._records.pop(key)
            self._conflicts[key] = [first, record]
        else:
            self._records[key] = record
            return
        message = _duplicate_message(self._conflicts[key])
        if self.strict:
            raise DuplicateComponentError(message)
        self.problems.append(message)
        warnings.warn(message, PluginWarning, stacklevel=3)

    def _problem(self, message: str) -> None:
        if self.strict:
            raise PluginError(message)
        self.problems.append(message)
        warnings.warn(message, PluginWarning, stacklevel=3)

    def add_commands(self, cli: Any) -> None:
        """Let every plugin add its sub-commands to the ``click`` group ``cli``."""
        for impl in self._pm.hook.register_commands.get_hookimpls():
            try:
                impl.function(cli=cli)
            except Exception as exc:
                self._problem(f"plugin {impl.plugin_name!r} failed in register_commands: "
                              f"{type(exc).__name__}: {exc}")

    # -- lookup --------------------------------------------------------------------------

    def records(self, kind: str | None = None) -> list[ComponentRecord]:
        """Usable records (conflicting names excluded), sorted by kind and name."""
        found = [r for r in self._records.values() if kind is None or r.kind == kind]
        return sorted(found, key=lambda r: (hookspecs.KINDS.index(r.kind), r.name))

    def names(self, kind: str) -> list[str]:
        return [r.name for r in self.records(kind)]

    def get(self, kind: str, name: str) -> ComponentRecord:
        if kind not in hookspecs.KINDS:
            raise UnknownComponentError(
                f"unknown component kind {kind!r}; kinds are {', '.join(hookspecs.KINDS)}"
            )
        key = (kind, name)
        if key in self._conflicts:
            raise DuplicateComponentError(_duplicate_message(self._conflicts[key]))
        if key not in self._records:
            raise UnknownComponentError(unknown_name_message(kind, name, self.names(kind)))
        return self._records[key]

    def validate(self, kind: str, spec: str | Mapping[str, Any]) -> tuple[ComponentRecord, BaseModel]:
        """Check a spec against the component's own parameter model."""
        name, params = split_spec(spec)
        record = self.get(kind, name)
        try:
            return record, record.params.model_validate(params)
        except ValidationError as exc:
            raise ParameterError(f"invalid parameters for {kind} {name!r}:\n{exc}") from exc

    def build(self, kind: str, spec: Any, **params: Any) -> Any:
        """Build a component from a name or ``{name: ..., **params}``; keyword arguments add
        parameters. An object that is already built (not a str or mapping) is returned as is."""
        if not isinstance(spec, (str, Mapping)):
            if params:
                raise ParameterError(f"cannot apply parameters {sorted(params)} to a built {kind}")
            return spec
        name, spec_params = split_spec(spec)
        record, model = self.validate(kind, {"name": name, **spec_params, **params})
        return record.factory(**dict(model))


def _ep_order(ep: metadata.EntryPoint) -> tuple[int, str, str]:
    dist = ep.dist.name if ep.dist is not None else ""
    return (dist != BUILTIN_SOURCE, dist, ep.name)


def _duplicate_message(records: list[ComponentRecord]) -> str:
    where = " and ".join(f"{r.source!r} (plugin {r.plugin!r})" for r in records)
    first = records[0]
    return f"{first.kind} {first.name!r} is registered more than once: by {where}"


def unknown_name_message(kind: str, name: str, installed: list[str]) -> str:
    message = f"no {kind} named {name!r}; installed: {', '.join(installed) or '(none)'}"
    close = difflib.get_close_matches(name, installed, n=1)
    if close:
        message += f". Did you mean {close[0]!r}?"
    return message


_REGISTRY: Registry | None = None


def get_registry() -> Registry:
    """The process-wide registry, loaded from entry points on first use."""
    global _REGISTRY
    if _REGISTRY is None:
        _REGISTRY = Registry().load_entry_points()
    return _REGISTRY


def reset_registry() -> None:
    """Forget the process-wide registry (the next :func:`get_registry` reloads plugins)."""
    global _REGISTRY
    _REGISTRY = None


def build(kind: str, spec: Any, **params: Any) -> Any:
    """Build a component by kind and name: ``build("schedule", "polynomial", exponent=2)``."""
    return get_registry().build(kind, spec, **params)


def list_components(kind: str | None = None) -> list[ComponentRecord]:
    """Every installed component (of one kind if given)."""
    return get_registry().records(kind)


def _component_validator(kind: str) -> Callable[[Any], Any]:
    def check(value: Any) -> Any:
        if isinstance(value, (str, Mapping)):
            name, _ = split_spec(value)
            try:
                _, model = get_registry().validate(kind, value)
            except (UnknownComponentError, ParameterError) as exc:
                raise ValueError(str(exc)) from exc  # pydantic reports it at the field's path
            return {"name": name, **model.model_dump(exclude_unset=True)}
        return value

    return check


def Component(kind: str) -> Any:  # noqa: N802 - used as a type annotation
    """A parameter that is itself a component of ``kind``: a name, ``{name: ..., **params}``
    (validated against that component's own model) or an already built object."""
    schema = {
        "anyOf": [
            {"type": "string", "description": f"name of a {kind}"},
            {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]},
        ]
    }
    return Annotated[Any, BeforeValidator(_component_validator(kind)), WithJsonSchema(schema)]
