r"""A griffe extension that turns ddkit's reStructuredText docstrings into the Markdown
that mkdocstrings renders.

ddkit's docstrings are written for reading in the source and in ``help()``: inline math as
``:math:`...```, display math as ``.. math::`` blocks, cross-references as ``:class:`...```
roles, code as ``Example::`` literal blocks and ``>>>`` doctest blocks. This extension
rewrites each docstring once, when griffe loads it:

* ``:math:`x``` becomes ``\(x\)`` and a ``.. math::`` block becomes ``$$ ... $$``: the
  delimiters of ``pymdownx.arithmatex`` (generic mode), typeset by the bundled KaTeX;
* ``:class:`~a.b.C```, ``:meth:``, ``:func:``, ``:attr:``, ``:mod:``, ``:data:`` become
  inline code (the name as written, without ``~``);
* a paragraph ending in ``::`` ends in ``:`` and the indented block after it becomes a
  fenced code block (``pycon`` for doctest sessions, ``python`` when it parses as Python,
  else ``text``); a bare ``>>>`` block becomes a ``pycon`` fence.

It is loaded by the mkdocstrings Python handler (``extensions:`` in ``mkdocs.yml``);
:func:`rst_to_markdown` is the conversion on its own, for tests.
"""

from __future__ import annotations

import ast
import re
import textwrap

import griffe

_INLINE_MATH = re.compile(r":math:`([^`]+)`")
_ROLE = re.compile(r":(?:py:)?(?:class|meth|func|attr|mod|data|obj|exc|const):`~?\.?([^`]+)`")
_DIRECTIVE = re.compile(r"^(?P<indent>[ \t]*)\.\. math::[ \t]*(?P<inline>.*)$")
_LITERAL_INTRO = re.compile(r"^(?P<indent>[ \t]*)(?P<text>.*?)(?P<colons>::)[ \t]*$")


def _indent_of(line: str) -> int:
    return len(line) - len(line.lstrip())


def _block_after(lines: list[str], start: int, indent: int) -> tuple[list[str], int]:
    """The indented block (deeper than ``indent``) starting at ``start``, blank lines
    inside it kept; returns its lines and the index after it."""
    end, block = start, []
    while end < len(lines) and not lines[end].strip():
        end += 1
    while end < len(lines) and (not lines[end].strip() or _indent_of(lines[end]) > indent):
        block.append(lines[end])
        end += 1
    while block and not block[-1].strip():
        block.pop()
        end -= 1
    return block, end


def _fence_language(code: str) -> str:
    if code.lstrip().startswith(">>>"):
        return "pycon"
    try:
        ast.parse(code)
    except SyntaxError:
        return "text"
    return "python"


def _convert_blocks(text: str) -> str:
    lines, out, i = text.split("\n"), [], 0
    while i < len(lines):
        line = lines[i]
        directive = _DIRECTIVE.match(line)
        literal = _LITERAL_INTRO.match(line) if not directive else None
        if directive:
            indent = directive["indent"]
            block, i = _block_after(lines, i + 1, len(indent))
            body = [directive["inline"]] if directive["inline"].strip() else []
            body += textwrap.dedent("\n".join(block)).split("\n") if block else []
            out += ["", f"{indent}$$", *(f"{indent}{b}" for b in body if b.strip()), f"{indent}$$", ""]
            continue
        if literal and (i + 1 == len(lines) or not lines[i + 1].strip()):
            block, end = _block_after(lines, i + 1, _indent_of(line))
            if block:
                indent, text_before = literal["indent"], literal["text"].rstrip()
                if text_before:
                    # "Example::" reads "Example:"; "text ::" (space before) drops the colons
                    out.append(indent + (text_before if literal["text"].endswith(" ") else text_before + ":"))
                code = textwrap.dedent("\n".join(block))
                out += ["", f"{indent}```{_fence_language(code)}",
                        *(f"{indent}{c}" if c else "" for c in code.split("\n")), f"{indent}```", ""]
                i = end
                continue
        if line.lstrip().startswith(">>> ") and (not out or not out[-1].strip()):
            indent, block = line[: _indent_of(line)], []
            while i < len(lines) and lines[i].strip():
                block.append(lines[i][len(indent):])
                i += 1
            out += [f"{indent}```pycon", *(f"{indent}{b}" for b in block), f"{indent}```"]
            continue
        out.append(line)
        i += 1
    return "\n".join(out)


def rst_to_markdown(text: str) -> str:
    """ddkit's reST docstring ``text`` as Markdown for mkdocstrings (see the module docstring)."""
    text = _convert_blocks(text)
    text = _INLINE_MATH.sub(lambda m: r"\(" + " ".join(m[1].split()) + r"\)", text)
    return _ROLE.sub(lambda m: f"`{m[1]}`", text)


class ReSTDocstrings(griffe.Extension):
    """Rewrites every docstring griffe loads with :func:`rst_to_markdown`."""

    def on_instance(self, *, obj: griffe.Object, **kwargs) -> None:
        if obj.docstring is not None:
            obj.docstring.value = rst_to_markdown(obj.docstring.value)
