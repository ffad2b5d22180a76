"""The plugin manager: discovers plugins, collects component records, builds components.

There is one :class:`pluggy.PluginManager` per :class:`Registry`. Plugins come from the
``ddkit`` entry-point group or are registered programmatically with
:meth:`Registry.add_plugin`. An entry point names a module, or a package: then the package
and every public module below it (names not starting with ``_``) are plugins, which is how
ddkit publishes its built-ins (one entry point per layer, so a new module needs no
reinstall). Each plugin registers typed :class:`ComponentRecord` s through the hooks in
:mod:`ddkit.hookspecs`.

Names: a component is selected by its plain name (``ancestral``) or by the name qualified
with its distribution (``ddkit:ancestral``, ``my-plugin:ancestral``). When distributions
register one name for one kind, all of them stay listed and selectable by qualified name;
the plain name selects ddkit's own component first, then the distributions in alphabetical
order of their (normalised) names, with a :class:`PluginWarning`.

Failure behaviour (one bad plugin never takes the others down):

* a plugin that raises on import, a hook implementation that matches no specification or
  has arguments the specification lacks, a hook that raises, a component whose explicit
  ``params`` model disagrees with its factory: a :class:`PluginWarning` naming the plugin
  and its distribution, and the plugin (or hook, or component) is skipped. Looking up a
  name that is missing then says which plugin failed and why;
* strict loading (``strict=True`` or ``DDKIT_STRICT_PLUGINS=1``) raises :class:`PluginError`
  (:class:`PluginValidationError`, :class:`DuplicateComponentError`) instead of warning;
* a factory that returns an object that is not of its kind (a sampler without ``sample``):
  :class:`PluginError` from :meth:`Registry.build`, naming the plugin;
* ``DDKIT_DISABLE_PLUGIN_AUTOLOAD=1`` skips third-party entry points (built-ins stay).
"""

from __future__ import annotations

import ast
import difflib
import importlib
import importlib.util
import inspect
import os
import pkgutil
import re
import textwrap
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from types import ModuleType
from typing import Annotated, Any

import pluggy
from pydantic import BaseModel, BeforeValidator, ConfigDict, ValidationError, WithJsonSchema

from . import hookspecs
from .errors import (
    DuplicateComponentError,
    ParameterError,
    PluginError,
    PluginValidationError,
    PluginWarning,
    UnknownComponentError,
)
from .params import parameter_names, params_model, signature_defaults

BUILTIN_SOURCE = "ddkit"
ENTRY_POINT_GROUP = "ddkit"
AUTOLOAD_ENV = "DDKIT_DISABLE_PLUGIN_AUTOLOAD"
STRICT_ENV = "DDKIT_STRICT_PLUGINS"
QUALIFIER = ":"

#: What an object built for each kind must provide (methods, or ``__call__``: callable), and
#: what it is expected to be, for the error message.
PRODUCTS: dict[str, tuple[str, tuple[str, ...]]] = {
    "schedule": ("a ddkit.Schedule", ("alpha", "alpha_prime")),
    "process": ("a ddkit.Process", ("sample_prior", "sample_marginal", "marginal_probs", "posterior_probs")),
    "parameterization": ("a ddkit.Parameterization", ("log_mean",)),
    "loss": ("a ddkit.Loss", ("__call__",)),
    "sampler": ("a ddkit.Sampler", ("sample",)),
    "corrector": ("a ddkit.Corrector", ("correct",)),
    "unmasking_rule": ("a ddkit.UnmaskingRule", ("start", "step")),
    "model": ("a denoiser (a torch.nn.Module or any callable)", ("__call__",)),
    "dataset": ("a ddkit.contrib.data.Dataset", ("load",)),
    "tokenizer": ("a ddkit.contrib.tokenizers.Tokenizer", ("encode", "decode")),
    "kernel": ("a ddkit.kernels.KernelBackend", ("supports",)),
}


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

    @property
    def qualified_name(self) -> str:
        """``distribution:name``, which selects this record even when others share its name."""
        return f"{self.source}{QUALIFIER}{self.name}"

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "name": self.name,
            "qualified_name": self.qualified_name,
            "source": self.source,
            "plugin": self.plugin,
            "summary": self.summary,
            "params": self.params.model_json_schema(),
        }


#: What a failed plugin would have registered: ``(kind, name)`` pairs, where a None kind or
#: name stands for any; None when that is unknown.
Provides = tuple[tuple[str | None, str | None], ...] | None


@dataclass(frozen=True)
class PluginFailure:
    """A plugin, one of its hooks or one of its components that could not be registered, and
    what it would have provided (so that a lookup of a missing name can say why it is missing)."""

    plugin: str
    source: str
    message: str
    provides: Provides = None

    def may_provide(self, kind: str, name: str) -> bool:
        return self.provides is None or any(k in (None, kind) and n in (None, name) for k, n in self.provides)

    def provides_exactly(self, kind: str, name: str) -> bool:
        return self.provides is not None and any(k in (None, kind) and n == name for k, n in self.provides)


def declared_components(source: str | None) -> Provides:
    """What a plugin's source registers, read without running it: ``(kind, name)`` for each
    ``register("name", ...)`` call with a literal name in a hook function (a misspelt hook
    name counts as the closest hook's kind, or as any kind), ``(kind, None)`` for a hook
    whose names are not literals. Empty if the source names no ``register_*`` hook at all;
    None (unknown) if there is no source or it does not parse."""
    if source is None:
        return None
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return None
    hooks = {hookspecs.hook_name(kind): kind for kind in hookspecs.KINDS}
    found: list[tuple[str | None, str | None]] = []
    mentions_hooks = False
    for node in ast.walk(tree):
        if isinstance(node, (ast.Name, ast.alias, ast.FunctionDef)):
            mentions_hooks |= (getattr(node, "id", None) or getattr(node, "name", "")).startswith("register_")
        if not (isinstance(node, ast.FunctionDef) and node.name.startswith("register_")
                and node.name != "register_commands" and node.args.args):
            continue
        close = difflib.get_close_matches(node.name, list(hooks), n=1)
        kind = hooks.get(node.name) or (hooks[close[0]] if close else None)
        register = node.args.args[0].arg
        names = [call.args[0].value for call in ast.walk(node)
                 if isinstance(call, ast.Call) and isinstance(call.func, ast.Name) and call.func.id == register
                 and call.args and isinstance(call.args[0], ast.Constant) and isinstance(call.args[0].value, str)]
        found += [(kind, name) for name in names] or [(kind, None)]
    return tuple(found) if found or not mentions_hooks else None


def _module_source(module: str) -> str | None:
    """The source of ``module`` without importing it (its parent packages are imported)."""
    try:
        spec = importlib.util.find_spec(module)
        return Path(spec.origin).read_text(encoding="utf-8") if spec and spec.origin else None
    except Exception:  # not findable or not a source file: what it provides is unknown
        return None


def _object_source(obj: Any) -> str | None:
    try:
        return textwrap.dedent(inspect.getsource(obj))
    except (OSError, TypeError):
        return None


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() not in ("", "0", "false", "no")


def normalize_distribution(name: str) -> str:
    """A distribution name as packaging compares them: ``My_Plugin`` -> ``my-plugin``."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _one_line(text: str) -> str:
    return "; ".join(line.strip() for line in str(text).splitlines() if line.strip())


def _precedence(record: ComponentRecord) -> tuple[bool, str]:
    """Which record a plain name selects: ddkit's own, then distributions by name."""
    return record.source != BUILTIN_SOURCE, normalize_distribution(record.source)


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


def signature_mismatches(factory: Callable[..., Any], params: type[BaseModel]) -> list[str]:
    """Where a params model disagrees with its factory's signature: a factory parameter that
    is not a field, a field the factory does not take (unless it is a function with
    ``**kwargs``), or a default that differs where both have one. Empty when they agree."""
    try:
        names, defaults = parameter_names(factory), signature_defaults(factory)
    except (TypeError, ValueError):  # no introspectable signature (a C function): nothing to compare
        return []
    fields = params.model_fields
    problems = [f"parameter {name!r} of the factory is not a field of the params model"
                for name in names if name not in fields]
    if not _takes_any_keyword(factory):
        problems += [f"field {name!r} of the params model is not a parameter of the factory"
                     for name in fields if name not in names]
    for name, default in defaults.items():
        field = fields.get(name)
        if field is not None and not field.is_required():
            model_default = field.get_default(call_default_factory=True)
            if not _same(model_default, default):
                problems.append(f"{name!r} defaults to {model_default!r} in the params model "
                                f"but to {default!r} in the factory")
    return problems


def _takes_any_keyword(factory: Callable[..., Any]) -> bool:
    """A function (not a class: ``**kwargs`` there is passed on to a base ``__init__``) that
    accepts ``**kwargs``."""
    if inspect.isclass(factory):
        return False
    parameters = inspect.signature(factory).parameters.values()
    return any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters)


def _same(a: Any, b: Any) -> bool:
    try:
        return bool(a == b)
    except Exception:  # e.g. a tensor with several elements: only identity is safe to claim
        return a is b


def _missing_product(kind: str, component: Any) -> list[str]:
    _, needed = PRODUCTS.get(kind, ("", ()))
    return [m for m in needed if not (callable(component) if m == "__call__"
                                      else callable(getattr(component, m, None)))]


class Registry:
    """Component records from every loaded plugin, and the way to build them."""

    def __init__(self, *, strict: bool | None = None, autoload: bool | None = None):
        self.strict = _env_flag(STRICT_ENV) if strict is None else strict
        self.autoload = (not _env_flag(AUTOLOAD_ENV)) if autoload is None else autoload
        self._pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
        self._pm.add_hookspecs(hookspecs)
        self._sources: dict[str, str] = {}  # plugin name -> distribution
        # (kind, name) -> the records of that name, the one the plain name selects first
        self._records: dict[tuple[str, str], list[ComponentRecord]] = {}
        #: one line per problem met while loading (each also warned, or raised in strict mode)
        self.problems: list[str] = []
        #: the plugins, hooks and components that were skipped, for lookups of missing names
        self.failures: list[PluginFailure] = []
        #: bumped whenever a record is added, so caches keyed on the registry can tell
        self.revision = 0

    # -- loading -------------------------------------------------------------------------

    def load_entry_points(self) -> Registry:
        """Load the ``ddkit`` entry points: always ddkit's own, others unless autoload is off."""
        for ep in sorted(metadata.entry_points(group=ENTRY_POINT_GROUP), key=_ep_order):
            source = ep.dist.name if ep.dist is not None else "<unknown distribution>"
            if source != BUILTIN_SOURCE and not self.autoload:
                continue
            name = f"{source}{QUALIFIER}{ep.name}"
            try:
                plugin = ep.load()
            except Exception as exc:  # a broken plugin must not break the others
                self._fail(PluginFailure(name, source, (
                    f"plugin {name!r} from distribution {source!r} failed to import "
                    f"({ep.value}): {type(exc).__name__}: {_one_line(exc)}"),
                    declared_components(_module_source(ep.module))))
                continue
            self.add_plugin(plugin, name=name, source=source)
            if isinstance(plugin, ModuleType) and hasattr(plugin, "__path__"):
                for module in self._package_modules(plugin, source):
                    self.add_plugin(module, name=module.__name__, source=source)
        return self

    def _package_modules(self, package: ModuleType, source: str) -> Iterator[ModuleType]:
        """Every public module below ``package`` (depth first, in name order), imported."""
        for info in pkgutil.iter_modules(package.__path__, package.__name__ + "."):
            if info.name.rpartition(".")[2].startswith("_"):
                continue
            try:
                module = importlib.import_module(info.name)
            except Exception as exc:
                self._fail(PluginFailure(info.name, source, (
                    f"plugin {info.name!r} from distribution {source!r} failed to import: "
                    f"{type(exc).__name__}: {_one_line(exc)}"),
                    declared_components(_module_source(info.name))))
                continue
            yield module
            if info.ispkg:
                yield from self._package_modules(module, source)

    def add_plugin(self, plugin: Any, *, name: str, source: str) -> Registry:
        """Register a plugin object (usually a module) and collect its components. A plugin
        whose hooks do not match the specifications is skipped with a warning
        (:class:`PluginValidationError` in strict mode)."""
        if self._pm.is_registered(plugin):
            return self
        try:
            self._pm.register(plugin, name=name)
            self._pm.check_pending()
        except pluggy.PluginValidationError as exc:
            if self._pm.is_registered(plugin):
                self._pm.unregister(plugin)
            self._fail(PluginFailure(name, source, (
                f"plugin {name!r} from distribution {source!r} is invalid and was skipped: "
                f"{_one_line(exc)}. Known hooks: "
                f"{', '.join(hookspecs.hook_name(k) for k in hookspecs.KINDS)}, register_commands"),
                declared_components(_object_source(plugin))), error=PluginValidationError)
            return self
        self._sources[name] = source
        for kind in hookspecs.KINDS:
            caller = getattr(self._pm.hook, hookspecs.hook_name(kind))
            for impl in caller.get_hookimpls():
                if impl.plugin is plugin:
                    self._collect(kind, impl, name, source)
        return self

    def _collect(self, kind: str, impl: Any, plugin_name: str, source: str) -> None:
        """Call one hook implementation; its components are added only if it returns."""
        calls: list[tuple[Any, Any, Any, Any]] = []

        def register(name: str, factory: Callable[..., Any], *,
                     params: type[BaseModel] | None = None, summary: str = "") -> None:
            calls.append((name, factory, params, summary))

        hook = hookspecs.hook_name(kind)
        try:
            impl.function(**{arg: register for arg in impl.argnames})
        except Exception as exc:
            declared = declared_components(_object_source(impl.function))
            self._fail(PluginFailure(plugin_name, source, (
                f"plugin {plugin_name!r} from distribution {source!r} failed in {hook}, "
                f"which was skipped: {type(exc).__name__}: {_one_line(exc)}"),
                tuple((kind, name) for _, name in declared) if declared else ((kind, None),)))
            return
        for name, factory, params, summary in calls:
            record = self._make_record(kind, name, factory, params, summary, source, plugin_name)
            if record is not None:
                self._add_record(record)

    def _make_record(self, kind: str, name: Any, factory: Any, params: Any, summary: Any,
                     source: str, plugin: str) -> ComponentRecord | None:
        """The record of one ``register(...)`` call, or None (reported) if it is unusable."""
        where = f"plugin {plugin!r}, distribution {source!r}"
        if not isinstance(name, str) or not name or QUALIFIER in name:
            self._fail(PluginFailure(plugin, source, (
                f"a {kind} named {name!r} ({where}) was skipped: a name is a non-empty string "
                f"without {QUALIFIER!r}"), ((kind, name if isinstance(name, str) else None),)))
            return None

        def skip(reason: str) -> None:
            self._fail(PluginFailure(plugin, source, f"{kind} {name!r} ({where}) was skipped: {reason}",
                                     ((kind, name),)))

        if not callable(factory):
            return skip(f"its factory must be callable, got {factory!r}")
        if params is None:
            try:
                params = params_model(factory, name=f"{name}:{kind}Params")
            except Exception as exc:
                return skip(f"no parameter model can be derived from its factory's signature: "
                            f"{type(exc).__name__}: {_one_line(exc)}")
        elif not (isinstance(params, type) and issubclass(params, BaseModel)):
            return skip(f"params must be a pydantic model class, got {params!r}")
        else:
            mismatches = signature_mismatches(factory, params)
            if mismatches:
                return skip(f"its params model {params.__name__} disagrees with the signature of "
                            f"{getattr(factory, '__qualname__', factory)!r}: {'; '.join(mismatches)}")
        return ComponentRecord(kind, name, factory, params, str(summary), source, plugin)

    def _add_record(self, record: ComponentRecord) -> None:
        same_name = self._records.setdefault((record.kind, record.name), [])
        twin = next((r for r in same_name
                     if normalize_distribution(r.source) == normalize_distribution(record.source)), None)
        if twin is not None:
            self._warn(f"{record.kind} {record.name!r} is registered twice by distribution {record.source!r} "
                       f"(plugins {twin.plugin!r} and {record.plugin!r}); the first is kept",
                       error=DuplicateComponentError)
            return
        same_name.append(record)
        same_name.sort(key=_precedence)
        self.revision += 1
        if len(same_name) > 1:
            self._warn(_clash_message(same_name), error=DuplicateComponentError)

    def _fail(self, failure: PluginFailure, *, error: type[PluginError] = PluginError) -> None:
        self.failures.append(failure)
        self._warn(failure.message, error=error)

    def _warn(self, message: str, *, error: type[PluginError] = PluginError) -> None:
        if self.strict:
            raise error(message)
        self.problems.append(message)
        warnings.warn(message, PluginWarning, stacklevel=4)

    def add_commands(self, cli: Any) -> None:
        """Let every plugin add its sub-commands to the ``click`` group ``cli``."""
        for impl in self._pm.hook.register_commands.get_hookimpls():
            try:
                impl.function(**{arg: cli for arg in impl.argnames})
            except Exception as exc:
                source = self._sources.get(impl.plugin_name, "<unknown distribution>")
                self._fail(PluginFailure(impl.plugin_name, source, (
                    f"plugin {impl.plugin_name!r} from distribution {source!r} failed in register_commands: "
                    f"{type(exc).__name__}: {_one_line(exc)}"), ()))

    # -- lookup --------------------------------------------------------------------------

    def records(self, kind: str | None = None) -> list[ComponentRecord]:
        """Every record (of one kind if given), sorted by kind and name; records that share
        a name come in precedence order, the one the plain name selects first."""
        found = [r for (k, _), same in self._records.items() if kind is None or k == kind for r in same]
        return sorted(found, key=lambda r: (hookspecs.KINDS.index(r.kind), r.name, *_precedence(r)))

    def names(self, kind: str) -> list[str]:
        """The plain names of the components of ``kind``, sorted."""
        return sorted({r.name for r in self.records(kind)})

    def selects(self, record: ComponentRecord) -> bool:
        """Whether ``record``'s plain name selects it (it has no higher-precedence namesake)."""
        same = self._records.get((record.kind, record.name), [])
        return bool(same) and same[0] is record

    def get(self, kind: str, name: str) -> ComponentRecord:
        """The record of ``name`` (plain or ``distribution:name``) among components of ``kind``."""
        if kind not in hookspecs.KINDS:
            raise UnknownComponentError(
                f"unknown component kind {kind!r}; kinds are {', '.join(hookspecs.KINDS)}"
            )
        if not isinstance(name, str):
            raise UnknownComponentError(f"a {kind} name is a string, got {name!r}")
        source, qualified, plain = name.partition(QUALIFIER) if QUALIFIER in name else ("", "", name)
        same = self._records.get((kind, plain), [])
        if not qualified and same:
            return same[0]
        if qualified:
            wanted = normalize_distribution(source)
            for record in same:
                if normalize_distribution(record.source) == wanted:
                    return record
        raise UnknownComponentError(self._missing_message(kind, name, plain, source if qualified else None))

    def _missing_message(self, kind: str, name: str, plain: str, source: str | None) -> str:
        """Why ``name`` is not found: the failure of the plugin that declares it if any; else
        the installed names with the closest one, and the failed plugins that may provide it."""
        relevant = [f for f in self.failures
                    if source is None or normalize_distribution(f.source) == normalize_distribution(source)]
        exact = [f for f in relevant if f.provides_exactly(kind, plain)]
        if exact:
            return f"no usable {kind} named {name!r}: " + "; ".join(f.message for f in exact)
        same = self._records.get((kind, plain), [])
        if source is not None and same:
            message = (f"no {kind} {plain!r} from distribution {source!r}; it is provided by "
                       f"{', '.join(repr(r.qualified_name) for r in same)}")
        elif source is not None:
            message = unknown_name_message(kind, name, [r.qualified_name for r in self.records(kind)])
        else:
            message = unknown_name_message(kind, name, self.names(kind))
        possible = [f for f in relevant if f.may_provide(kind, plain)]
        if possible:
            message += ("; these plugins failed to load and may have provided it: "
                        + "; ".join(f.message for f in possible))
        return message

    def validate(self, kind: str, spec: str | Mapping[str, Any]) -> tuple[ComponentRecord, BaseModel]:
        """Check a spec against the component's own parameter model."""
        name, params = split_spec(spec)
        record = self.get(kind, name)
        try:
            return record, record.params.model_validate(params)
        except ValidationError as exc:
            raise ParameterError(f"invalid parameters for {kind} {name!r}:\n{exc}", kind=kind, name=name,
                                 params=record.params, errors=exc) from exc

    def build(self, kind: str, spec: Any, **params: Any) -> Any:
        """Build a component from a name or ``{name: ..., **params}``; keyword arguments add
        parameters. An object that is already built (not a str or mapping) is returned as is.
        A factory that returns something not of ``kind`` raises :class:`PluginError`."""
        if not isinstance(spec, (str, Mapping)):
            if params:
                raise ParameterError(f"cannot apply parameters {sorted(params)} to a built {kind}")
            return spec
        name, spec_params = split_spec(spec)
        record, model = self.validate(kind, {"name": name, **spec_params, **params})
        component = record.factory(**dict(model))
        missing = _missing_product(kind, component)
        if missing:
            expected, _ = PRODUCTS[kind]
            raise PluginError(
                f"{kind} {record.name!r} from plugin {record.plugin!r} (distribution {record.source!r}) "
                f"is broken: its factory returned a {type(component).__qualname__} without "
                f"{', '.join(missing)}; expected {expected}")
        return component


def _ep_order(ep: metadata.EntryPoint) -> tuple[int, str, str]:
    dist = ep.dist.name if ep.dist is not None else ""
    return (dist != BUILTIN_SOURCE, dist, ep.name)


def _clash_message(records: list[ComponentRecord]) -> str:
    first = records[0]
    where = " and ".join(f"{r.source!r} (plugin {r.plugin!r})" for r in records)
    return (f"{first.kind} {first.name!r} is registered more than once: by {where}; the plain name "
            f"selects {first.qualified_name!r} (ddkit's own first, then distributions by name); "
            f"select one explicitly with {' or '.join(repr(r.qualified_name) for r in records)}")


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
            # pydantic reports a ValueError at the field's path; a ParameterError is one and
            # keeps the nested component's own errors for a config to report at their paths
            try:
                _, model = get_registry().validate(kind, value)
            except UnknownComponentError as exc:
                raise ParameterError(str(exc), kind=kind, name=name) from exc
            return {"name": name, **model.model_dump(exclude_unset=True)}
        if value is None or _missing_product(kind, value):  # a number or a list is no built component
            expected, _ = PRODUCTS.get(kind, (f"a built {kind}", ()))
            raise ValueError(f"a {kind} is a name, a mapping {{name: <{kind}>, ...parameters}} or {expected}")
        return value

    return check


def Component(kind: str) -> Any:  # noqa: N802 - used as a type annotation
    """A parameter that is itself a component of ``kind``: a name, ``{name: ..., **params}``
    (validated against that component's own model) or an already built object (one with the
    methods of its kind, :data:`PRODUCTS`). An optional one is ``Component(kind) | None``."""
    schema = {
        "anyOf": [
            {"type": "string", "description": f"name of a {kind}"},
            {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]},
        ]
    }
    return Annotated[Any, BeforeValidator(_component_validator(kind)), WithJsonSchema(schema)]
