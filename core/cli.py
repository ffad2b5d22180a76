"""The ``ddkit`` command line.

Plugins add sub-commands through the ``register_commands`` hook; they are loaded when the
group first needs its commands (``--help`` or a sub-command). A plugin that fails to load
is one ``warning:`` line on stderr and is skipped; with strict loading
(``DDKIT_STRICT_PLUGINS=1``) its :class:`ddkit.PluginError` is one ``Error:`` line on stderr
and the exit status is 1, without a traceback.
"""

from __future__ import annotations

import json
import sys
import warnings

import click

from .errors import PluginError, PluginWarning
from .hookspecs import KINDS
from .registry import get_registry


class PluginCommandGroup(click.Group):
    """A ``click`` group that adds the plugins' sub-commands on first use and reports plugin
    problems as single lines."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._plugin_commands_added = False

    def _add_plugin_commands(self) -> None:
        if self._plugin_commands_added:
            return
        self._plugin_commands_added = True
        registry = get_registry()
        registry.add_commands(self)
        for problem in registry.problems:
            click.echo(f"warning: {problem}", err=True)

    def list_commands(self, ctx: click.Context) -> list[str]:
        self._add_plugin_commands()
        return super().list_commands(ctx)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        self._add_plugin_commands()
        return super().get_command(ctx, cmd_name)

    def main(self, *args, **kwargs):
        with warnings.catch_warnings():
            # each problem is printed once as a "warning:" line by _add_plugin_commands
            warnings.simplefilter("ignore", PluginWarning)
            try:
                return super().main(*args, **kwargs)
            except PluginError as exc:
                click.echo(f"Error: {exc}", err=True)
                sys.exit(1)


@click.group(cls=PluginCommandGroup)
@click.version_option(package_name="ddkit")
def main() -> None:
    """ddkit: discrete diffusion models."""


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list of objects.")
@click.option("--kind", type=click.Choice(KINDS), help="Only components of this kind.")
def plugins(as_json: bool, kind: str | None) -> None:
    """List installed components: built-ins and third-party plugins. A name registered by
    several distributions is listed once per distribution; the plain name selects the first
    row, the others are shown by the qualified name (distribution:name) that selects them."""
    registry = get_registry()
    records = registry.records(kind)
    if as_json:
        rows = [{**r.to_json(), "selected_by_plain_name": registry.selects(r)} for r in records]
        click.echo(json.dumps(rows, indent=2))
    else:
        rows = [("KIND", "NAME", "SOURCE", "SUMMARY")] + [
            (r.kind, r.name if registry.selects(r) else r.qualified_name, r.source, r.summary)
            for r in records
        ]
        widths = [max(len(row[i]) for row in rows) for i in range(3)]
        for row in rows:
            click.echo("  ".join(c.ljust(w) for c, w in zip(row[:3], widths)) + "  " + row[3])


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
