"""Command-line commands for large data: ``ddkit data build`` (a tokenised corpus on disk,
:mod:`ddkit.contrib.data.token_file`) and ``ddkit tokenizer train`` (a byte-level BPE,
:mod:`ddkit.contrib.hf_tokenizer`)::

    ddkit tokenizer train tokenizer.json corpus/*.txt --vocab-size 8192
    ddkit data build data/owt corpus/*.txt --tokenizer hf -p path=tokenizer.json
    ddkit data build data/text8 text8 --tokenizer char -p preset=text8 --validation-fraction 0.05
"""

from __future__ import annotations

import click

import ddkit
from ddkit.config import ConfigError, apply_overrides

from .cli import _friendly


@click.group("data")
def data_group():
    """Prepare data sets on disk."""


@data_group.command("build")
@click.argument("out", type=click.Path(file_okay=False))
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--tokenizer", "tokenizer_name", default="char", show_default=True,
              help="Tokenizer plugin (char is fitted on the files).")
@click.option("-p", "--param", "params", multiple=True, metavar="KEY=VALUE", help="Tokenizer parameter (repeatable).")
@click.option("--validation-fraction", type=click.FloatRange(0, 0.5, max_open=True), default=0.0005,
              show_default=True, help="The last fraction of the input bytes, for validation.")
@click.option("--test-fraction", type=click.FloatRange(0, 0.5, max_open=True), default=0.0, show_default=True,
              help="The very last fraction of the input bytes, for testing.")
@click.option("--encoding", default="utf-8", show_default=True)
@click.option("--no-progress", is_flag=True, help="Hide the progress bar.")
@_friendly
def build(out, files, tokenizer_name, params, validation_fraction, test_fraction, encoding, no_progress):
    """Tokenise text FILES into a memory-mapped corpus directory OUT (the token_file data set)."""
    from .data.token_file import build_corpus

    spec = apply_overrides({"name": tokenizer_name}, params)
    try:
        tokenizer = ddkit.build("tokenizer", spec)
    except ddkit.ParameterError as exc:
        raise ConfigError(f"--tokenizer: {exc}") from None
    except ValueError as exc:
        raise ConfigError(f"--tokenizer {tokenizer_name}: {exc}") from None
    try:
        header = build_corpus(files, out, tokenizer, validation_fraction=validation_fraction,
                              test_fraction=test_fraction, encoding=encoding, progress=not no_progress)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    sizes = ", ".join(f"{name} {entry['tokens']:,}" for name, entry in header["splits"].items())
    click.echo(f"wrote {out}: {sizes} tokens ({header['dtype']}, vocabulary {header['vocab_size']}"
               f"{'' if header['eot_id'] is None else ', end-of-text id ' + str(header['eot_id'])}); "
               f"use it with data.dataset: {{name: token_file, path: {out}}}")


@click.group("tokenizer")
def tokenizer_group():
    """Train subword tokenizers."""


@tokenizer_group.command("train")
@click.argument("out", type=click.Path(dir_okay=False))
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--vocab-size", type=click.IntRange(min=1), required=True, help="Symbols, the end-of-text token included.")
@click.option("--eot", default="<|endoftext|>", show_default=True, help="End-of-text token ('' for none).")
@click.option("--min-frequency", type=click.IntRange(min=1), default=2, show_default=True,
              help="Pairs seen fewer times are not merged.")
@click.option("--no-progress", is_flag=True, help="Hide the progress bar.")
@_friendly
def train(out, files, vocab_size, eot, min_frequency, no_progress):
    """Train a byte-level BPE tokenizer on text FILES and save it as OUT (a tokenizer.json)."""
    from .hf_tokenizer import train_bpe

    try:
        tokenizer = train_bpe(files, out, vocab_size=vocab_size, eot=eot or None, min_frequency=min_frequency,
                              progress=not no_progress)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    click.echo(f"wrote {out}: vocabulary {tokenizer.vocab_size}"
               f"{'' if tokenizer.eot_id is None else f', end-of-text id {tokenizer.eot_id}'} "
               f"(the mask is id {tokenizer.vocab_size}); use it with data.tokenizer: {{name: hf, path: {out}}}")


@ddkit.hookimpl
def register_commands(cli):
    for command in (data_group, tokenizer_group):
        cli.add_command(command)
