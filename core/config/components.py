"""Components inside a config: a section that names a plugin, ``{name: <plugin>, ...parameters}``
or just the plugin's name, checked against that plugin's own parameter model.

Any config schema can use these pieces (the pipeline's, in :mod:`ddkit.contrib.pipeline_config`,
is one):

* :func:`ComponentSpec` annotates a component field of a pydantic section model: the schema
  checks its shape, :func:`check_component` its parameters;
* :func:`check_component` validates one component with the values that the config's owner
  passes it itself (a vocabulary size, another component), and returns the problem lines in
  the format of :func:`~ddkit.config.format_validation_error` (nested components included);
* :func:`component_json_schema` replaces each component field of a JSON Schema by the
  installed plugins of its kind with their parameter schemas.

Example::

    >>> from ddkit.config import check_component
    >>> check_component("schedule", {"name": "polynomial", "exponent": -1}, where="schedule").problems
    ["schedule.exponent (schedule 'polynomial'): Input should be greater than 0 (got -1)"]
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ValidationError, WithJsonSchema

from ..errors import DDKitError, ParameterError
from ..registry import ComponentRecord, get_registry, split_spec
from .errors import format_parameter_error, format_validation_error, show_value

#: JSON Schema key that marks a component field (its value: the kind)
KIND_KEY = "x-ddkit-kind"


def component_shape(value: Any) -> str | dict[str, Any]:
    """A plugin name, or a mapping with a string ``name``; anything else is a :class:`ValueError`."""
    if isinstance(value, str):
        return value
    if isinstance(value, Mapping):
        if not isinstance(value.get("name"), str):
            raise ValueError("a component needs a string 'name' (the plugin to use)")
        return dict(value)
    raise ValueError("a component is a plugin name or a mapping {name: <plugin>, ...parameters}")


def ComponentSpec(kind: str) -> Any:  # noqa: N802 - used as a type annotation
    """A component of ``kind`` in a config section: shape-checked by the schema, parameters
    checked against the plugin's own model by :func:`check_component`."""
    return Annotated[str | dict[str, Any], BeforeValidator(component_shape), WithJsonSchema({KIND_KEY: kind})]


def get_path(raw: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    """``raw[path[0]][path[1]]...``, or ``None`` where a key is missing."""
    node: Any = raw
    for part in path:
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


@dataclass
class CheckedComponent:
    """The outcome of :func:`check_component`: the plugin's record and validated parameters,
    or the problem lines."""

    name: str | None
    record: ComponentRecord | None = None
    params: BaseModel | None = None
    problems: list[str] = field(default_factory=list)
    #: the owner's parameters that were passed in (left out of :meth:`spec`)
    provided: frozenset[str] = frozenset()

    @property
    def ok(self) -> bool:
        return self.params is not None and not self.problems

    def spec(self) -> dict[str, Any]:
        """``{name, **parameters}`` with every default written in, without the values the
        owner passed (they are not part of the file)."""
        dumped = self.params.model_dump(mode="json") if self.params is not None else {}
        return {"name": self.name, **{k: v for k, v in dumped.items() if k not in self.provided}}


def check_component(kind: str, spec: Any, *, where: str, provided: Mapping[str, Any] | None = None,
                    owned: Mapping[str, str] | None = None, settable: Collection[str] = ()) -> CheckedComponent:
    """Validate ``spec`` (a name or ``{name, ...parameters}``) against the parameter model of the
    ``kind`` plugin it names; ``where`` is its dotted path, which starts every problem line.

    ``owned`` lists the parameters that the config's owner passes itself (parameter -> where
    its value comes from, for messages), ``provided`` their values. Writing an owned parameter
    in ``spec`` is a problem unless it is ``settable``: then the written value is validated
    (and the owner checks that it agrees). An owned parameter that the plugin declares but
    whose value is not in ``provided`` (its source is broken and reported there) is left out,
    and so are the errors it causes."""
    provided, owned = provided or {}, owned or {}
    try:
        name, given = split_spec(component_shape(spec))
    except (ValueError, ParameterError) as exc:
        return CheckedComponent(None, problems=[f"{where}: {exc}"])
    try:
        record = get_registry().get(kind, name)
    except DDKitError as exc:  # an unknown name (with "did you mean"), or a plugin that failed
        return CheckedComponent(name, problems=[f"{where}.name: {exc}"])
    problems: list[str] = []
    values = dict(given)
    passed: set[str] = set()
    missing: set[str] = set()
    for key, source in owned.items():
        if key not in record.params.model_fields:
            continue
        if key in given:
            if key in settable:
                continue
            problems.append(f"{where}.{key}: set by {source}; remove it here (got {show_value(given[key])})")
        if key in provided:
            values[key] = provided[key]
            passed.add(key)
        else:
            values.pop(key, None)
            missing.add(key)
    try:
        params = record.params.model_validate(values)
    except ValidationError as exc:
        lines = format_validation_error(exc, prefix=where, model=record.params, what=f" ({kind} {name!r})")
        problems += [line for line in lines if not any(_at(line, f"{where}.{key}") for key in missing)]
        return CheckedComponent(name, record, problems=problems, provided=frozenset(passed))
    except ParameterError as exc:
        return CheckedComponent(name, record, problems=problems + format_parameter_error(exc, where=where),
                                provided=frozenset(passed))
    except ValueError as exc:
        return CheckedComponent(name, record, problems=problems + [f"{where}: {exc}"], provided=frozenset(passed))
    if missing:  # validated without a value it needs: no usable parameters
        return CheckedComponent(name, record, problems=problems, provided=frozenset(passed))
    return CheckedComponent(name, record, params, problems, frozenset(passed))


def _at(line: str, path: str) -> bool:
    """Whether a problem line is about ``path`` or something inside it."""
    return line.startswith(path) and line[len(path):len(path) + 1] in (" ", ".", ":", "[")


def component_json_schema(schema: dict[str, Any], *, owned: Mapping[str, Collection[str]] | None = None,
                          settable: Collection[str] = ()) -> dict[str, Any]:
    """``schema`` (a model's JSON Schema) with every :func:`ComponentSpec` field replaced by the
    installed plugins of its kind: their names, and each one's parameter schema without the
    ``owned`` parameters of that kind (``settable`` ones stay, as optional)."""
    registry = get_registry()
    owned = owned or {}

    def options(kind: str, description: str | None) -> dict[str, Any]:
        choices: list[dict[str, Any]] = [{"type": "string", "enum": registry.names(kind)}]
        hidden = set(owned.get(kind, ()))
        for record in registry.records(kind):
            params = record.params.model_json_schema()
            properties = {k: v for k, v in params.get("properties", {}).items() if k not in hidden - set(settable)}
            required = [k for k in params.get("required", []) if k not in hidden]
            option = {"type": "object", "title": f"{kind} {record.name}", "description": record.summary,
                      "properties": {"name": {"const": record.name}, **properties},
                      "required": ["name", *required], "additionalProperties": False}
            if "$defs" in params:
                option["$defs"] = params["$defs"]
            choices.append(option)
        out: dict[str, Any] = {"anyOf": choices}
        if description:
            out["description"] = description
        return out

    def patch(node: Any) -> Any:
        if isinstance(node, dict):
            if KIND_KEY in node:
                return options(node[KIND_KEY], node.get("description"))
            if "anyOf" in node:  # an optional component
                for option in node["anyOf"]:
                    if isinstance(option, dict) and KIND_KEY in option:
                        out = {"anyOf": [options(option[KIND_KEY], None), {"type": "null"}]}
                        if "description" in node:
                            out["description"] = node["description"]
                        return out
            return {k: patch(v) for k, v in node.items()}
        if isinstance(node, list):
            return [patch(v) for v in node]
        return node

    return patch(schema)
