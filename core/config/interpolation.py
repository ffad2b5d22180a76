"""Interpolations in pipeline files, resolved with a private resolver table.

OmegaConf keeps its resolvers in one process-wide table that any imported library can add to
(``OmegaConf.register_new_resolver``), and its grammar lets the name of a resolver be an
interpolation itself (``${${key}:...}``, ``${oc.${key}:...}``): no check of the text can tell
which resolver OmegaConf would call. ddkit therefore never lets OmegaConf resolve a
pipeline. OmegaConf only *parses*: the YAML, and each string that contains ``${`` with its
interpolation grammar (:func:`omegaconf.grammar_parser.parse`, so escapes and quoting mean
exactly what they mean in OmegaConf). This module evaluates the parse tree itself:

- a node interpolation (``${data.seq_len}``, relative ``${.seq_len}``, ``${a.${b}}``) is looked
  up in the plain config being resolved, with cycles reported;
- a resolver interpolation must spell its name out literally, and the name is looked up in
  :data:`PIPELINE_RESOLVERS`, a table of this module; OmegaConf's global table is never
  consulted, so ``oc.decode``, ``oc.create`` or an eval-like resolver that some library
  registered cannot run, whatever the text looks like.

The resolvers:

- ``${oc.env:VAR,default}`` reads an environment variable (pipeline files use it for data
  paths, e.g. ``${oc.env:TEXT8_PATH,./text8}``). Its value is written into the resolved config
  (the run directory's ``config.yaml``, the checkpoint, ``samples.json``), so never
  interpolate a secret;
- ``${oc.select:key,default}`` is a node interpolation with a default for a missing key.

Only a pipeline file and its command-line overrides are resolved. A resolved config (the run
directory's ``config.yaml``, a checkpoint's metadata) is never resolved again: a literal
``${`` in a prompt, a path or an alphabet stays as it is, and a checkpoint from elsewhere
cannot read the environment. :func:`escape_interpolations` writes such a literal as ``\\${``
so that a resolved config saved as YAML loads back, as a pipeline file, to the same values.
"""

from __future__ import annotations

import contextlib
import copy
import os
import re
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from omegaconf.errors import GrammarParseError, OmegaConfBaseException
from omegaconf.grammar_parser import parse
from omegaconf.grammar_visitor import GrammarVisitor, OmegaConfGrammarParser

from .errors import ConfigError, dotted, show_value

KeyPath = tuple[Any, ...]  # keys (str) and list indices (int) from the root of the config


class _Problem(Exception):
    """What is wrong with the interpolation being evaluated (its path is added by the caller)."""


class _KeyNotFound(_Problem):
    pass


class _Failure(Exception):
    """A finished problem line, raised through every interpolation that depends on it."""

    def __init__(self, path: KeyPath, text: str, message: str):
        super().__init__(f"{dotted(path)}: {message} (got {show_value(text)})")


def _split_key(key: str) -> tuple[int, tuple[str, ...]]:
    """``"..a.b[0]"`` -> ``(2, ("a", "b", "0"))``: leading dots (relative levels), then keys."""
    rest = key.lstrip(".")
    return len(key) - len(rest), tuple(part for pair in re.findall(r"([^.\[\]]+)|\[([^\]]*)\]", rest)
                                       for part in pair if part)


def _env(resolution: _Resolution, path: KeyPath, *args: Any) -> Any:
    if len(args) not in (1, 2) or not isinstance(args[0], str):
        raise _Problem("oc.env takes a variable name and an optional default, like ${oc.env:TEXT8_PATH,./text8}")
    name = args[0]
    if name in os.environ:
        return os.environ[name]
    if len(args) == 2:
        return None if args[1] is None else str(args[1])
    raise _Problem(f"environment variable {name!r} is not set; set it or give a default: ${{oc.env:{name},default}}")


def _select(resolution: _Resolution, path: KeyPath, *args: Any) -> Any:
    if len(args) not in (1, 2) or not isinstance(args[0], str):
        raise _Problem("oc.select takes a key and an optional default, like ${oc.select:data.seq_len,64}")
    dots, parts = _split_key(args[0])
    try:
        return resolution.select(path, dots, parts, args[0])
    except _KeyNotFound:
        if len(args) == 2:
            return args[1]
        raise


#: the only resolvers a pipeline may use, by literal name: ``(resolution, path, *args) -> value``
PIPELINE_RESOLVERS: Mapping[str, Callable[..., Any]] = {"oc.env": _env, "oc.select": _select}
_ALLOWED_TEXT = "use ${path.to.key}, ${oc.env:VAR,default} or ${oc.select:key,default}"


def _is_interpolation(value: Any) -> bool:
    return isinstance(value, str) and "${" in value  # OmegaConf's own test (escapes included)


class _Visitor(GrammarVisitor):
    """OmegaConf's parse-tree visitor with ddkit's callbacks: keys are looked up in the plain
    config, resolver names are checked against the private table before their arguments are
    evaluated. With ``locating``, the outermost node interpolation gives its target's place
    (:meth:`_Resolution.locate`) instead of its value."""

    def __init__(self, resolution: _Resolution, path: KeyPath, *, locating: bool = False):
        super().__init__(node_interpolation_callback=self._node, resolver_interpolation_callback=self._call,
                         memo=None)
        self.resolution, self.path, self.locating = resolution, path, locating
        self.depth = 0  # nesting of node interpolations: ${a.${b}} visits ${b} at depth 2

    def visitResolverName(self, ctx: Any) -> str:
        name = ctx.getText()
        if any(isinstance(child, OmegaConfGrammarParser.InterpolationContext) for child in ctx.getChildren()):
            raise _Problem(f"the resolver name {name!r} is itself an interpolation; a resolver must be "
                           f"named literally ({_ALLOWED_TEXT})")
        if name not in self.resolution.resolvers:
            raise _Problem(f"interpolation resolver {name!r} is not allowed; {_ALLOWED_TEXT}")
        return name

    def visitInterpolationNode(self, ctx: Any) -> Any:
        self.depth += 1
        try:
            return super().visitInterpolationNode(ctx)
        finally:
            self.depth -= 1

    def _node(self, key: Any, memo: Any) -> Any:
        if isinstance(key, str):  # omegaconf 2.3 hands over the key's text
            (dots, parts), shown = _split_key(key), key
        else:
            dots, parts, shown = key.relative_dots, key.parts, key.raw
        if self.locating and self.depth == 1:
            return self.resolution.locate(self.path, dots, parts, shown)
        return self.resolution.select(self.path, dots, parts, shown)

    def _call(self, name: str, args: tuple[Any, ...], args_str: tuple[str, ...]) -> Any:
        return self.resolution.resolvers[name](self.resolution, self.path, *args)


class _Resolution:
    """One resolution of one config: resolved strings by path, and the strings being resolved
    (a path met again while it is being resolved is a cycle)."""

    def __init__(self, root: Any, resolvers: Mapping[str, Callable[..., Any]]):
        self.root, self.resolvers = root, resolvers
        self.done: dict[KeyPath, Any] = {}
        self.active: list[KeyPath] = []

    @contextlib.contextmanager
    def _resolving(self, path: KeyPath, text: str) -> Iterator[None]:
        """While the string at ``path`` is resolved: a reference back to it is a cycle, and
        any problem becomes that string's :class:`_Failure`."""
        if path in self.active:
            cycle = " -> ".join(dotted(p) for p in [*self.active[self.active.index(path):], path])
            raise _Failure(path, text, f"the interpolation refers back to itself ({cycle})")
        self.active.append(path)
        try:
            yield
        except _Problem as exc:
            raise _Failure(path, text, str(exc)) from None
        except OmegaConfBaseException as exc:
            raise _Failure(path, text, str(exc).splitlines()[0]) from None
        finally:
            self.active.pop()

    def resolve_string(self, path: KeyPath, text: str) -> Any:
        if path not in self.done:
            try:
                tree = parse(text)
            except GrammarParseError as exc:
                raise _Failure(path, text, f"not a valid interpolation ({str(exc).splitlines()[0]}); "
                                           "write a literal '${' as '\\${'") from None
            with self._resolving(path, text):
                self.done[path] = _Visitor(self, path).visit(tree)
        value = self.done[path]
        return copy.deepcopy(value) if isinstance(value, (dict, list)) else value

    def resolve_tree(self, node: Any, path: KeyPath) -> Any:
        """``node`` (a part of the unresolved config at ``path``) with everything resolved."""
        if isinstance(node, dict):
            return {key: self.resolve_tree(value, (*path, key)) for key, value in node.items()}
        if isinstance(node, list):
            return [self.resolve_tree(value, (*path, i)) for i, value in enumerate(node)]
        return self.resolve_string(path, node) if _is_interpolation(node) else node

    def follow(self, path: KeyPath, text: str) -> tuple[bool, Any] | None:
        """Where the string at ``path`` points if it is one node interpolation (``${a.b}``),
        as :meth:`locate` gives it; ``None`` for any other string. A key path walks through
        such a string like OmegaConf does, without resolving the rest of its target."""
        try:
            body = parse(text).text()
        except GrammarParseError:
            return None  # reported when the string itself is resolved
        inner = body.interpolation(0) if body.getChildCount() == 1 else None
        target = inner.interpolationNode() if inner is not None else None
        if target is None:
            return None
        with self._resolving(path, text):
            return _Visitor(self, path, locating=True).visitInterpolationNode(target)

    def locate(self, path: KeyPath, dots: int, parts: tuple[str, ...], shown: str) -> tuple[bool, Any]:
        """Where ``parts`` leads, from the root or, with ``dots`` leading dots, from the
        container of the value at ``path`` (one dot) or above: ``(True, key path)`` inside
        the unresolved config, or ``(False, value)`` inside a value that a string resolved to
        (which is never resolved again)."""
        if dots > len(path):
            raise _KeyNotFound(f"interpolation key {shown!r} goes above the root of the config")
        at: KeyPath = path[: len(path) - dots] if dots else ()
        node, raw = self._at(at), True
        for part in parts:
            while raw and _is_interpolation(node):
                target = self.follow(at, node)
                if target is None:
                    node, raw = self.resolve_string(at, node), False
                elif target[0]:
                    at, node = target[1], self._at(target[1])
                else:
                    node, raw = target[1], False
            key = self._child_key(node, part)
            if key is None:
                raise _KeyNotFound(f"interpolation key {shown!r} not found")
            node = node[key]
            if raw:
                at = (*at, key)
        return (True, at) if raw else (False, node)

    def select(self, path: KeyPath, dots: int, parts: tuple[str, ...], shown: str) -> Any:
        """The resolved value that :meth:`locate` finds."""
        raw, where = self.locate(path, dots, parts, shown)
        return self.resolve_tree(self._at(where), where) if raw else copy.deepcopy(where)

    def _at(self, path: KeyPath) -> Any:
        node = self.root
        for key in path:
            node = node[key]
        return node

    @staticmethod
    def _child_key(node: Any, part: str) -> Any:
        if isinstance(node, dict):
            if part in node:
                return part
            return int(part) if re.fullmatch(r"-?\d+", part) and int(part) in node else None
        if isinstance(node, list) and part.isdigit() and int(part) < len(node):
            return int(part)
        return None


def resolve_interpolations(data: Mapping[str, Any], *, source: str | None = None,
                           resolvers: Mapping[str, Callable[..., Any]] = PIPELINE_RESOLVERS) -> dict[str, Any]:
    """A copy of the plain config ``data`` with every interpolation resolved (see the module
    docstring). Raises :class:`ConfigError` with one line per string that cannot be resolved."""
    resolution = _Resolution(data, resolvers)
    problems: list[str] = []

    def walk(node: Any, path: KeyPath) -> Any:
        if isinstance(node, dict):
            return {key: walk(value, (*path, key)) for key, value in node.items()}
        if isinstance(node, list):
            return [walk(value, (*path, i)) for i, value in enumerate(node)]
        if _is_interpolation(node):
            try:
                return resolution.resolve_string(path, node)
            except _Failure as exc:
                if str(exc) not in problems:
                    problems.append(str(exc))
        return node

    resolved = walk(dict(data), ())
    if problems:
        raise ConfigError(problems, source=source)
    return resolved


def escape_interpolations(data: Any) -> Any:
    """A copy of a resolved config in which every literal ``${`` is escaped as ``\\${`` (and
    the backslashes before it doubled), so that loading it as a pipeline file gives back
    exactly ``data``."""
    if isinstance(data, Mapping):
        return {key: escape_interpolations(value) for key, value in data.items()}
    if isinstance(data, (list, tuple)):
        return [escape_interpolations(value) for value in data]
    if _is_interpolation(data):
        return re.sub(r"(\\*)\$\{", lambda m: m.group(1) * 2 + "\\${", data)
    return data
