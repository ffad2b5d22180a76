"""Configuration errors: every problem is one line ``dotted.path: what is wrong (got value)``."""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence
from typing import Any

from pydantic import BaseModel, ValidationError

from ..errors import DDKitError, ParameterError, UnknownComponentError


class ConfigError(DDKitError, ValueError):
    """A pipeline configuration is invalid. ``problems`` holds one line per problem."""

    def __init__(self, problems: str | Sequence[str], *, source: str | None = None):
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        self.source = source
        where = f" in {source}" if source else ""
        count = len(self.problems)
        header = f"invalid configuration{where} ({count} problem{'s' if count != 1 else ''}):"
        super().__init__("\n".join([header, *(f"  - {p}" for p in self.problems)]))


def dotted(loc: Iterable[Any], prefix: str = "") -> str:
    """``("train", "steps")`` -> ``train.steps``; integers become ``[i]``."""
    path = prefix
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}" if path else str(part)
    return path or "<root>"


def show_value(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _model_at(model: type[BaseModel] | None, loc: Sequence[Any]) -> type[BaseModel] | None:
    """The pydantic model that owns the last key of ``loc`` (for "did you mean")."""
    for part in loc[:-1]:
        if model is None or not isinstance(part, str) or part not in model.model_fields:
            return None
        annotation = model.model_fields[part].annotation
        model = annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None
    return model


def format_validation_error(exc: ValidationError, *, prefix: str = "",
                            model: type[BaseModel] | None = None, what: str = "") -> list[str]:
    """One line per pydantic error: path, message, the offending value; unknown keys get the
    allowed keys and a "did you mean" from ``model``. The errors of a nested component (a
    parameter that is itself a component, such as ``process.schedule``) get lines of their
    own at their full paths (:func:`format_parameter_error`)."""
    lines = []
    for err in exc.errors():
        loc = [p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-"))]
        path = dotted(loc, prefix)
        kind = err["type"]
        nested = err.get("ctx", {}).get("error")
        if isinstance(nested, ParameterError) and nested.kind is not None:
            lines += format_parameter_error(nested, where=path)
            continue
        if kind == "extra_forbidden":
            owner = _model_at(model, loc)
            allowed = sorted(owner.model_fields) if owner is not None else []
            line = f"{path}{what}: unknown key (got {show_value(err['input'])})"
            close = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
            if close:
                line += f"; did you mean {close[0]!r}?"
            if allowed:
                line += f" Allowed keys: {', '.join(allowed)}"
            elif owner is not None:
                line += "; it takes no parameters"
            lines.append(line)
        elif kind == "missing":
            lines.append(f"{path}{what}: missing required value")
        else:
            message = err["msg"].removeprefix("Value error, ")
            lines.append(f"{path}{what}: {message} (got {show_value(err.get('input'))})")
    return lines


def format_parameter_error(exc: ParameterError, *, where: str) -> list[str]:
    """The lines of a component's :class:`~ddkit.ParameterError` for the component at
    ``where`` (a dotted path): one per parameter, as ``where.key (kind 'name'): ...``; an
    unknown plugin name as ``where.name: ...``."""
    if isinstance(exc.errors, ValidationError):
        return format_validation_error(exc.errors, prefix=where, model=exc.params,
                                       what=f" ({exc.kind} {exc.name!r})")
    if isinstance(exc.__cause__, UnknownComponentError):
        return [f"{where}.name: {exc}"]
    return [f"{where}: {exc}"]
