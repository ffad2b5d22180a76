"""A component's parameters, declared once: in its factory's signature.

The parameter model that validates a component's YAML section is derived from the factory's
signature (a class's ``__init__`` or a function), so names, types, defaults and constraints
are written in one place::

    from typing import Annotated
    from pydantic import Field

    class MySchedule(ddkit.Schedule):
        def __init__(self, exponent: Annotated[float, Field(gt=0)] = 2.0): ...

    ddkit.params_model(MySchedule)(exponent=-1)   # pydantic ValidationError: greater than 0

A class ``__init__`` that takes ``**kwargs`` inherits the parameters of the next base class's
``__init__`` (the usual way a subclass adds one option to its parent's). Parameters without
an annotation accept any value.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, ConfigDict, create_model


def _signature_parameters(factory: Callable[..., Any]) -> list[tuple[inspect.Parameter, Any]]:
    """``(parameter, annotation)`` pairs of the factory's keyword-capable parameters, with
    ``**kwargs`` of a class ``__init__`` expanded into its base class's parameters."""
    if inspect.isclass(factory):
        for i, cls in enumerate(factory.__mro__):
            if "__init__" in vars(cls) and cls is not object:
                return _function_parameters(cls.__init__, factory.__mro__[i + 1:], skip_self=True)
        return []
    return _function_parameters(factory, (), skip_self=False)


def _function_parameters(function: Callable[..., Any], bases: tuple[type, ...], *,
                         skip_self: bool) -> list[tuple[inspect.Parameter, Any]]:
    signature = inspect.signature(function)
    try:
        hints = typing.get_type_hints(function, include_extras=True)
    except Exception:  # an annotation that cannot be evaluated: accept any value there
        hints = {}
    found, expand = [], False
    parameters = list(signature.parameters.values())
    for parameter in parameters[1:] if skip_self else parameters:
        if parameter.kind is inspect.Parameter.VAR_KEYWORD:
            expand = True
        elif parameter.kind is not inspect.Parameter.VAR_POSITIONAL:
            found.append((parameter, hints.get(parameter.name, Any)))
    if expand:
        for i, cls in enumerate(bases):
            if "__init__" in vars(cls) and cls is not object:
                own = {p.name for p, _ in found}
                inherited = _function_parameters(cls.__init__, bases[i + 1:], skip_self=True)
                found += [(p, a) for p, a in inherited if p.name not in own]
                break
    return found


def params_model(factory: Callable[..., Any], *, name: str | None = None) -> type[BaseModel]:
    """The pydantic model of ``factory``'s keyword parameters (``extra="forbid"``): one field
    per parameter, with its annotation (``Annotated[..., Field(...)]`` constraints included)
    and its default (required when it has none). Floats must be finite unless their ``Field``
    has ``allow_inf_nan=True``."""
    fields: dict[str, Any] = {}
    for parameter, annotation in _signature_parameters(factory):
        default = ... if parameter.default is inspect.Parameter.empty else parameter.default
        fields[parameter.name] = (annotation, default)
    model_name = name or f"{getattr(factory, '__name__', 'Component')}Params"
    # a float parameter is finite unless its Field says allow_inf_nan=True (NaN and infinity
    # written in a config are typos far more often than meant)
    config = ConfigDict(extra="forbid", arbitrary_types_allowed=True, allow_inf_nan=False)
    return create_model(model_name, __config__=config, **fields)


def signature_defaults(factory: Callable[..., Any]) -> dict[str, Any]:
    """``{name: default}`` of the factory's parameters that have one (``**kwargs`` expanded)."""
    return {p.name: p.default for p, _ in _signature_parameters(factory)
            if p.default is not inspect.Parameter.empty}


def parameter_names(factory: Callable[..., Any]) -> list[str]:
    """Names of the factory's keyword parameters (``**kwargs`` expanded)."""
    return [p.name for p, _ in _signature_parameters(factory)]
