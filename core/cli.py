"""The ``ddkit`` command line."""

from __future__ import annotations

import json
import sys

import click

from .hookspecs import KINDS
from .registry import get_registry


@click.group()
@click.version_option(package_name="ddkit")
def main() -> None:
    """ddkit: discrete diffusion models."""


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list of objects.")
@click.option("--kind", type=click.Choice(KINDS), help="Only components of this kind.")
def plugins(as_json: bool, kind: str | None) -> None:
    """List installed components: built-ins and third-party plugins."""
    registry = get_registry()
    records = registry.records(kind)
    if as_json:
        click.echo(json.dumps([r.to_json() for r in records], indent=2))
    else:
        rows = [("KIND", "NAME", "SOURCE", "SUMMARY")] + [
            (r.kind, r.name, r.source, r.summary) for r in records
        ]
        widths = [max(len(row[i]) for row in rows) for i in range(3)]
        for row in rows:
            click.echo("  ".join(c.ljust(w) for c, w in zip(row[:3], widths)) + "  " + row[3])
    for problem in registry.problems:
        click.echo(f"warning: {problem}", err=True)


get_registry().add_commands(main)

if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
