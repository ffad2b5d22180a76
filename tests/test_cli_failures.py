"""Every wrong input on the command line ends in a clear message and a failing exit status,
never in a traceback: one table, one row per input (the command line, the exit status, and
regular expressions that lines of the output must match).

The command line runs in-process; an exception that escapes it fails the row with the
exception and its traceback. Rows that need a trained run share one tiny run directory
(the Markov pipeline, a few steps) and damage copies of it; rows that need another machine
(a file system that refuses writes, a strict plugin loader) set that up with ``monkeypatch``.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

import ddkit
from ddkit.cli import main
from ddkit.contrib import checkpoint as checkpoint_module
from ddkit.contrib import runner as runner_module
from ddkit.contrib.checkpoint import CHECKPOINT_NAME, tensor_sha256
from ddkit.contrib.evaluate import ELBOEstimate
from pipeline_helpers import ROOT, TINY
from plugin_helpers import install_broken_distribution

MARKOV = str(ROOT / "pipelines" / "markov.yaml")
SMALL = ["data.dataset.train_sequences=64", "data.dataset.validation_sequences=16", "data.dataset.test_sequences=0"]
HUGE = 2**64  # beyond every 64-bit seed
CHECKPOINT_FAILS = 1  # a damaged or mismatched checkpoint: "another ddkit error"


@dataclass
class Env:
    """What a row may use: a scratch folder, the shared tiny run, and monkeypatch."""

    tmp: Path
    trained: Path
    monkeypatch: pytest.MonkeyPatch

    def run_copy(self) -> Path:
        """A copy of the tiny run to damage."""
        copy = self.tmp / "run"
        shutil.copytree(self.trained, copy)
        return copy


@dataclass
class Row:
    id: str
    args: Callable[[Env], list[str]] | list[str]
    exit_code: int
    lines: list[str]  # each regex must match (re.search) one line of the output
    then: Callable[[Env], None] | None = None  # more checks after the command
    skip: str | None = None  # why this row cannot run on this machine
    setup: Callable[[Env], None] | None = field(default=None)


def validate(*overrides: str) -> list[str]:
    return ["config", "validate", MARKOV, *SMALL, *overrides]


# -- damaged checkpoints -----------------------------------------------------------------

def rewrite_checkpoint(run: Path, *, tensors: Callable[[dict], None] | None = None,
                       meta: Callable[[dict], None] | None = None, raw_meta: str | None = None) -> None:
    """Change a checkpoint's tensors or metadata and record matching hashes, so that only
    the change itself is wrong (not the file's integrity)."""
    path = run / CHECKPOINT_NAME
    with safe_open(str(path), "pt") as f:
        data = json.loads(f.metadata()["ddkit"])
        values = {key: f.get_tensor(key) for key in f.keys()}
    if tensors is not None:
        tensors(values)
    if meta is not None:
        meta(data)
    data["sha256"] = {key: tensor_sha256(value) for key, value in values.items()}
    save_file(values, str(path), metadata={"ddkit": raw_meta if raw_meta is not None else json.dumps(data)})


def damaged(**change) -> Callable[[Env], list[str]]:
    """``sample`` from a copy of the tiny run whose checkpoint was changed."""
    def args(env: Env) -> list[str]:
        run = env.run_copy()
        rewrite_checkpoint(run, **change)
        return ["sample", "--run", str(run), "--out", str(env.tmp / "samples.txt")]
    return args


def resumed(**change) -> Callable[[Env], list[str]]:
    """Resume (two more steps) a copy of the tiny run whose checkpoint was changed."""
    def args(env: Env) -> list[str]:
        run = env.run_copy()
        rewrite_checkpoint(run, **change)
        return ["train", MARKOV, *TINY, *SMALL, "train.steps=6", "--resume", "--out", str(run)]
    return args


def reshape_embedding(tensors: dict) -> None:
    for key in ("model.embed.weight", "ema.embed.weight"):
        tensors[key] = torch.zeros(3, 3)


def wider_network(meta: dict) -> None:
    meta["config"]["model"]["width"] = 2 * meta["config"]["model"]["width"]


# -- file systems that refuse writes -----------------------------------------------------

class RefusingFile:
    """A file whose writes fail with ``code``, as write() does on a full or read-only disk."""

    def __init__(self, path, code: int):
        self.path, self.code = path, code

    def write(self, data):
        raise OSError(self.code, os.strerror(self.code))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        Path(self.path).unlink(missing_ok=True)


def refuse_writes(code: int) -> Callable[[Env], None]:
    """Every report ddkit writes atomically fails with ``code``."""
    def setup(env: Env) -> None:
        def open_refusing(path, mode="r", *args, **kwargs):
            if "w" in mode or "x" in mode:
                Path(path).touch()
                return RefusingFile(path, code)
            return open(path, mode, *args, **kwargs)
        env.monkeypatch.setattr(checkpoint_module, "open", open_refusing, raising=False)
    return setup


def refuse_checkpoint_writes(env: Env) -> None:
    """safetensors reports a full disk as its own error, with the OS error in the message."""
    def save_file_on_full_disk(*args, **kwargs):
        raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")
    env.monkeypatch.setattr(checkpoint_module, "save_file", save_file_on_full_disk)


def not_writable(env: Env) -> None:
    """A folder that refuses writes (``chmod 555``)."""
    folder = env.tmp / "read-only"
    folder.mkdir()
    folder.chmod(0o555)


def read_only_mount(env: Env) -> None:
    """A folder on a read-only file system: access(W_OK) is refused even for root."""
    folder = env.tmp / "read-only"
    folder.mkdir()
    real_access = os.access
    env.monkeypatch.setattr(os, "access", lambda path, mode, *args, **kwargs: (
        False if Path(path) == folder and mode & os.W_OK else real_access(path, mode, *args, **kwargs)))


def overflowing_elbo(env: Env) -> None:
    """An evaluation whose bound is far beyond exp's range (about 709.78 nats)."""
    env.monkeypatch.setattr(runner_module, "estimate_elbo",
                            lambda *args, **kwargs: ELBOEstimate(1e6, 1.0, 8, 16, 2))


def eval_json_has_no_perplexity(env: Env) -> None:
    report = json.loads((env.tmp / "eval.json").read_text(), parse_constant=pytest.fail)
    assert report["continuous"]["perplexity"] is None and report["continuous"]["nats_per_token"] == 1e6


def nothing_trained(env: Env) -> None:
    assert not (env.tmp / "run" / CHECKPOINT_NAME).exists()


def strict_plugins(env: Env) -> None:
    site = install_broken_distribution(env.tmp / "site")
    env.monkeypatch.syspath_prepend(str(site))
    env.monkeypatch.setenv("DDKIT_STRICT_PLUGINS", "1")
    env.monkeypatch.delenv("DDKIT_DISABLE_PLUGIN_AUTOLOAD", raising=False)
    ddkit.reset_registry()


def corpus(env: Env) -> Path:
    path = env.tmp / "corpus.txt"
    path.write_text("the quick brown fox jumps over the lazy dog. " * 40)
    return path


def pipeline_file(env: Env, extra: str) -> Path:
    """The Markov pipeline with ``extra`` YAML (a section it does not have) appended."""
    path = env.tmp / "pipeline.yaml"
    path.write_text(Path(MARKOV).read_text() + "\n" + extra + "\n")
    return path


def infill_template(env: Env) -> list[str]:
    return ["sample", "--run", str(env.trained), "--infill", "ab__", "--blank", "ab",
            "--out", str(env.tmp / "samples.txt")]


def sample(env: Env, *args: str) -> list[str]:
    return ["sample", "--run", str(env.trained), "--out", str(env.tmp / "samples.txt"), *args]


ROWS = [
    # -- validate before spending compute: ddkit config validate, and run/train before training
    Row("prompt-outside-vocabulary", validate("sample.prompt=XYZ"), 2,
        [r"^  - sample\.prompt: characters 'XYZ' are not in the tokenizer's alphabet of 8 characters"]),
    Row("infill-outside-vocabulary", validate("sample.infill=ab__zz"), 2,
        [r"^  - sample\.infill: characters 'z' are not in the tokenizer's alphabet of 8 characters"]),
    Row("prompt-longer-than-sample", validate("sample.prompt=abcdefgh", "sample.length=4"), 2,
        [r"sample\.prompt: the prompt is 8 tokens, longer than the sample length 4"]),
    Row("run-prompt-outside-vocabulary", lambda env: ["run", MARKOV, *TINY, *SMALL, "sample.prompt=XYZ",
                                                      "--out", str(env.tmp / "run")], 2,
        [r"sample\.prompt: characters 'XYZ' are not in"], then=nothing_trained),
    Row("temperature-nan", validate("sampler.temperature=.nan"), 2,
        [r"sampler\.temperature \(sampler 'ancestral'\): Input should be a finite number \(got nan\)"]),
    Row("temperature-inf", validate("sampler.temperature=.inf"), 2,
        [r"sampler\.temperature \(sampler 'ancestral'\): Input should be a finite number \(got inf\)"]),
    Row("lr-inf", validate("train.lr=.inf"), 2, [r"train\.lr: Input should be a finite number \(got inf\)"]),
    Row("lr-nan", validate("train.lr=.nan"), 2, [r"train\.lr: Input should be a finite number \(got nan\)"]),
    Row("weight-decay-inf", validate("train.weight_decay=.inf"), 2,
        [r"train\.weight_decay: Input should be a finite number \(got inf\)"]),
    Row("plugin-float-inf", validate("model.rope_base=.inf"), 2,
        [r"model\.rope_base \(model 'dit'\): Input should be a finite number \(got inf\)"]),
    Row("nested-plugin-float-inf", validate("process.schedule={name: polynomial, exponent: .inf}"), 2,
        [r"^  - process\.schedule\.exponent \(schedule 'polynomial'\): Input should be a finite number \(got inf\)",
         r"\(1 problem\)"]),
    Row("eval-split-missing", validate("eval.split=test"), 2,
        [r"eval\.split: this data set has no 'test' split; it has train, validation"]),
    Row("adam-beta1-one", validate("train.betas=[1.0,0.99]"), 2,
        [r"train\.betas\[0\]: Input should be less than 1 \(got 1\.0\)"]),
    Row("adam-beta2-negative", validate("train.betas=[0.9,-0.1]"), 2,
        [r"train\.betas\[1\]: Input should be greater than or equal to 0 \(got -0\.1\)"]),
    Row("device-mps-missing", validate("train.device=mps"), 2,
        [r"train\.device: 'mps' \(Apple's Metal backend\) is not available on this machine"],
        skip="this machine has MPS" if torch.backends.mps.is_available() else None),
    Row("device-cuda-missing", validate("train.device=cuda:0"), 2,
        [r"train\.device: 'cuda:0': CUDA is not available on this machine; use auto or cpu"],
        skip="this machine has CUDA" if torch.cuda.is_available() else None),
    Row("device-cuda-index", validate("train.device=cuda:99"), 2,
        [r"train\.device: 'cuda:99': (CUDA is not available|this machine has \d+ CUDA device)"]),
    Row("device-banana", validate("train.device=banana"), 2,
        [r"train\.device: not a device; expected auto, cpu, cuda, cuda:N or mps \(got 'banana'\)"]),
    Row("device-option-banana", lambda env: ["run", MARKOV, "--device", "banana", "--out", str(env.tmp / "run")], 2,
        [r"Invalid value for '--device': 'banana' is not a device; expected auto, cpu, cuda, cuda:N or mps"]),
    Row("sample-device-mps", lambda env: sample(env, "--device", "mps"), 2,
        [r"Invalid value for '--device': 'mps' \(Apple's Metal backend\) is not available"],
        skip="this machine has MPS" if torch.backends.mps.is_available() else None),
    Row("output-dir-is-a-file", lambda env: validate(f"output.dir={corpus(env)}"), 2,
        [r"output\.dir: .*corpus\.txt is a file, not a directory"]),
    Row("output-dir-under-a-file", lambda env: validate(f"output.dir={corpus(env)}/run"), 2,
        [r"output\.dir: .*corpus\.txt is a file, not a directory, so .*corpus\.txt/run cannot be made"]),
    Row("run-output-dir-is-a-file", lambda env: ["run", MARKOV, *SMALL, f"output.dir={corpus(env)}"], 2,
        [r"output\.dir: .*corpus\.txt is a file, not a directory"]),
    Row("out-option-is-a-file", lambda env: ["run", MARKOV, "--out", str(corpus(env))], 2,
        [r"Invalid value for '--out': Directory '.*corpus\.txt' is a file"]),
    Row("model-too-large-for-memory", validate("model.width=1000000", "model.heads=1"), 2,
        [r"model: [\d,]+ parameters( and [\d.,]+ [KMGT]B of buffers)? need about [\d.,]+ TB to train in float32 "
         r".* but cpu has [\d.,]+ [KMGT]B"]),
    Row("model-buffers-too-large", validate("model.max_seq_len=1000000000000"), 2,
        [r"model: [\d,]+ parameters and [\d.,]+ TB of buffers need about"]),
    Row("model-depth-huge", validate("model.depth=1000000000000000000000000000000"), 2,
        [r"model\.depth \(model 'dit'\): Input should be less than or equal to 1024"]),
    Row("batch-logits-too-large", validate("train.batch_size=9223372036854775807"), 2,
        [r"train\.batch_size: 9,223,372,036,854,775,807 rows of \d+ tokens need at least [\d.,]+ TB for their "
         r"float32 logits over 8 tokens alone"]),
    Row("data-too-large", validate("data.seq_len=9223372036854775807"), 2,
        [r"data: [\d,]+ sequences of data\.seq_len=9,223,372,036,854,775,807 tokens need about [\d.,]+ TB"]),
    Row("seq-len-beyond-int64", ["config", "validate", str(ROOT / "pipelines" / "uniform.yaml"), f"data.seq_len={HUGE}"],
        2, [rf"data\.seq_len: the train split has \d+ tokens, fewer than one window of data\.seq_len={HUGE}"]),
    Row("loss-for-another-process", ["config", "validate", str(ROOT / "pipelines" / "flexmdm.yaml"),
                                     "loss=continuous_elbo"], 2,
        [r"^  - loss: ContinuousELBO needs a process factorised over positions, with a schedule"]),
    Row("nested-component-junk", validate("sampler.corrector=[[1]]"), 2,
        [r"sampler\.corrector \(sampler 'ancestral'\): a corrector is a name, a mapping .* or a ddkit\.Corrector "
         r"\(got \[\[1\]\]\)"]),
    Row("component-not-a-mapping", validate("data.tokenizer=2.5"), 2,
        [r"^  - data\.tokenizer: a component is a plugin name or a mapping .* \(got 2\.5\)",
         r"invalid configuration .*\(1 problem\)"]),
    Row("interpolation-unparsable", lambda env: ["config", "validate", str(pipeline_file(env, "output: {dir: '${}'}"))],
        2, [r"^  - output\.dir: cannot parse the value '\$\{\}': no viable alternative at input"]),
    Row("override-unparsable", validate("sample.prompt=${}"), 2,
        [r"^  - override 'sample\.prompt=\$\{\}': cannot parse the value: no viable alternative at input '\$\{\}'$"]),
    Row("parameter-beyond-int64-in-a-factory", ["config", "validate", str(ROOT / "pipelines" / "ar.yaml"),
                                                "loss.block_length=9223372036854775807"], 2,
        [r"^  - loss: a parameter is too large to compute with \(IntArrayRef contains an int that cannot be "
         r"represented"]),
    Row("parameter-overflows-a-factory", lambda env: ["config", "validate", str(ROOT / "pipelines" / "ar.yaml"),
                                                      f"loss.block_length={HUGE}"], 2,
        [r"^  - loss: a parameter is too large to compute with \(int too big to convert; got \{'block_length'"]),
    # -- every failure a clear message
    Row("huge-width", validate("model.width=100000000000000000000"), 2,
        [r"^  - model: a parameter is too large to compute with \(.*Overflow.*; got \{'width': 100000000000000000000"]),
    Row("seed-huge", validate(f"seed={HUGE}"), 2,
        [rf"seed: Input should be less than or equal to 9223372036854775807 \(got {HUGE}\)"]),
    Row("seed-negative", validate("seed=-1"), 2, [r"^  - seed: Input should be greater than or equal to 0"]),
    Row("sample-seed-huge", validate(f"sample.seed={HUGE}"), 2, [r"sample\.seed: Input should be less than or equal"]),
    Row("dataset-seed-huge", validate(f"data.dataset.seed={HUGE}"), 2,
        [r"data\.dataset\.seed \(dataset 'markov'\): Input should be less than or equal to"]),
    Row("seed-option-huge", lambda env: sample(env, "--seed", str(HUGE)), 2,
        [rf"Invalid value for '--seed': {HUGE} is not in the range 0<=x<=9223372036854775807"]),
    Row("eval-seed-negative", lambda env: ["eval", "--run", str(env.trained), "--seed", "-1"], 2,
        [r"Invalid value for '--seed': -1 is not in the range 0<=x<=9223372036854775807"]),
    Row("unknown-encoding", lambda env: ["config", "validate", MARKOV, f"data.dataset={{name: textfile, path: "
                                         f"'{corpus(env)}', encoding: bogus}}", "data.seq_len=16", "model.max_seq_len=16"],
        2, [r"data\.dataset\.encoding \(dataset 'textfile'\): unknown text encoding 'bogus'; expected a Python codec"]),
    Row("replacement-not-in-alphabet", validate("data.tokenizer={name: char, alphabet: abcdefgh, unknown: replace, "
                                                "replacement: z}"), 2,
        [r"data\.tokenizer \(tokenizer 'char'\): replacement 'z' is not in the alphabet 'abcdefgh'"]),
    Row("output-dir-not-writable", lambda env: validate(f"output.dir={env.tmp}/read-only/run"), 2,
        [r"output\.dir: .*read-only is not writable, so .*read-only/run cannot be made"], setup=not_writable,
        skip="root writes into any folder" if os.geteuid() == 0 else None),
    Row("output-dir-on-read-only-mount", lambda env: ["run", MARKOV, *SMALL, "--out", f"{env.tmp}/read-only/run"], 2,
        [r"--out: .*read-only is not writable, so .*read-only/run cannot be made"], setup=read_only_mount),
    Row("read-only-while-writing", lambda env: sample(env), 4,
        [r"^Error: file system: Read-only file system: .*samples\.txt; write to a writable directory \(--out\)"],
        setup=refuse_writes(errno.EROFS)),
    Row("disk-full-while-writing", lambda env: sample(env), 4,
        [r"^Error: file system: No space left on device: .*samples\.txt; free some space or write elsewhere"],
        setup=refuse_writes(errno.ENOSPC)),
    Row("disk-full-while-checkpointing", lambda env: ["train", MARKOV, *TINY, *SMALL, "--out", str(env.tmp / "run")], 4,
        [r"^Error: file system: No space left on device: .*checkpoint\.safetensors; free some space"],
        setup=refuse_checkpoint_writes),
    Row("checkpoint-metadata-not-json", damaged(raw_meta="{not json"), CHECKPOINT_FAILS,
        [r"^Error: .*checkpoint\.safetensors: the checkpoint's metadata is not valid JSON"]),
    Row("checkpoint-metadata-wrong-type", damaged(meta=lambda m: m.update(ema_updates="many")), CHECKPOINT_FAILS,
        [r"^Error: .*: the checkpoint's metadata field 'ema_updates' is 'many', expected an integer"]),
    Row("checkpoint-optimizer-metadata", damaged(meta=lambda m: m.update(optimizer={"param_groups": "x"})),
        CHECKPOINT_FAILS, [r"^Error: .*: the checkpoint's metadata field 'optimizer' has no list of 'param_groups'"]),
    Row("checkpoint-stored-config-invalid", damaged(meta=lambda m: m["config"]["train"].update(steps="many")), 2,
        [r"invalid configuration in the config stored in .*checkpoint\.safetensors",
         r"^  - train\.steps: Input should be a valid integer"]),
    Row("resume-without-rng-state", resumed(tensors=lambda t: [t.pop(k) for k in list(t) if k.startswith("rng.")]),
        0, [r"^trained 6 steps"]),
    Row("resume-tensor-shape", resumed(tensors=reshape_embedding), CHECKPOINT_FAILS,
        [r"^Error: .*: the model tensors do not match the network its config builds: 1 of another shape "
         r"\(first model\.embed\.weight: \[3, 3\] in the file, \[9, 16\] in the network\)"]),
    Row("resume-tensor-unexpected", resumed(tensors=lambda t: t.update({"model.extra": torch.zeros(2)})),
        CHECKPOINT_FAILS, [r"the model tensors do not match .*: 1 not in the network \(first model\.extra\)"]),
    Row("checkpoint-tensor-shape", damaged(tensors=reshape_embedding), CHECKPOINT_FAILS,
        [r"^Error: .*: the ema tensors do not match the network its config builds: 1 of another shape "
         r"\(first ema\.embed\.weight: \[3, 3\] in the file, \[9, 16\] in the network\)"]),
    Row("checkpoint-config-other-network", damaged(meta=wider_network), CHECKPOINT_FAILS,
        [r"^Error: .*: the ema tensors do not match the network its config builds: \d+ of another shape"]),
    Row("checkpoint-tensor-missing", damaged(tensors=lambda t: t.pop("ema.head.bias")), CHECKPOINT_FAILS,
        [r"the ema tensors do not match the network its config builds: 1 missing \(first ema\.head\.bias\)"]),
    Row("eval-split-missing-in-run", lambda env: ["eval", "--run", str(env.trained), "--split", "test",
                                                  "--out", str(env.tmp / "eval.json")], 2,
        [r"eval\.split: this data set has no 'test' split; it has train, validation"]),
    Row("perplexity-overflow", lambda env: ["eval", "--run", str(env.trained), "--out", str(env.tmp / "eval.json")], 0,
        [r"1000000\.0000 ± [\d.]+ nats/token .* perplexity ≤ n/a"], setup=overflowing_elbo,
        then=eval_json_has_no_perplexity),
    Row("strict-plugins", validate(), 1, [r"^Error: .*broken-plugins"], setup=strict_plugins),
    Row("p-several-unreadable", lambda env: sample(env, "-p", "foo", "-p", "temperature=0.5", "-p", "bar"), 2,
        [r"^  - -p 'foo': expected key\.path=value", r"^  - -p 'bar': expected key\.path=value",
         r"invalid configuration \(2 problems\)"]),
    Row("p-several-invalid", lambda env: sample(env, "-p", "temperature=abc", "-p", "steps=-1"), 2,
        [r"^  - sampler\.temperature \(sampler 'ancestral'\): Input should be a valid number",
         r"^  - sampler\.steps \(sampler 'ancestral'\): Input should be greater than or equal to 1",
         r"invalid configuration \(2 problems\)"]),
    Row("p-unknown-key", lambda env: sample(env, "-p", "tempreature=1"), 2,
        [r"sampler\.tempreature \(sampler 'ancestral'\): unknown key \(got 1\); did you mean 'temperature'\?"]),
    Row("p-key-the-pipeline-sets", lambda env: sample(env, "-p", "parameterization=score"), 2,
        [r"sampler\.parameterization: set by the pipeline from its 'parameterization' section; remove it here"]),
    Row("sample-count-too-large", lambda env: sample(env, "-n", "1000000000000"), 2,
        [r"sample\.num_samples \(-n\): 1,000,000,000,000 rows of 16 tokens need at least [\d.,]+ TB for their "
         r"float32 logits"]),
    Row("eval-time-samples-too-large", lambda env: ["eval", "--run", str(env.trained), "--time-samples",
                                                    "1000000000000", "--out", str(env.tmp / "eval.json")], 2,
        [r"eval\.batch_size \(--batch-size, --time-samples\): 1,000,000,000,000 rows of 16 tokens need at least"]),
    Row("eval-discrete-steps-overflow", lambda env: ["eval", "--run", str(env.trained), "--discrete-steps",
                                                     str(HUGE), "--out", str(env.tmp / "eval.json")], 2,
        [r"^Error: a number is too large to compute with \(int too big to convert\)"]),
    Row("sampler-steps-out-of-memory", lambda env: sample(env, "-p", "steps=1000000000000000"), 2,
        [r"^Error: out of memory \(.*can't allocate memory.*\); ask for less: fewer samples or steps"]),
    Row("blank-longer-than-one", infill_template, 2,
        [r"Invalid value for '--blank': 'ab' is 2 characters; expected one character"]),
    Row("sample-prompt-outside-vocabulary", lambda env: sample(env, "--prompt", "XYZ"), 2,
        [r"sample: characters 'XYZ' are not in the tokenizer's alphabet of 8 characters"]),
]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A tiny trained Markov run (a few steps, 16 tokens, width 16)."""
    run = tmp_path_factory.mktemp("trained") / "run"
    result = CliRunner().invoke(main, ["run", MARKOV, *TINY, *SMALL, "--out", str(run)])
    assert result.exit_code == 0, result.output
    return run


def invoke_row(args: list[str]):
    """Run the command line in-process; an exception that escapes it fails the row."""
    result = CliRunner().invoke(main, args)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        pytest.fail(f"ddkit {' '.join(args)} raised {type(result.exception).__name__}: {result.exception}\n"
                    + "".join(traceback.format_exception(*result.exc_info)), pytrace=False)
    return result


@pytest.mark.parametrize("row", ROWS, ids=[row.id for row in ROWS])
def test_wrong_input_ends_in_a_clear_message(row: Row, trained: Path, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch):
    if row.skip:
        pytest.skip(row.skip)
    env = Env(tmp_path, trained, monkeypatch)
    try:
        if row.setup is not None:
            row.setup(env)
        args = row.args(env) if callable(row.args) else row.args
        result = invoke_row(args)
    finally:
        monkeypatch.undo()
        ddkit.reset_registry()  # a row may have loaded plugins under other settings
    output = result.output
    assert "Traceback" not in output, output
    assert result.exit_code == row.exit_code, output
    lines = output.splitlines()
    for pattern in row.lines:
        assert any(re.search(pattern, line) for line in lines), f"no line matches {pattern!r}:\n{output}"
    if row.then is not None:
        row.then(env)


def test_the_table_names_each_input_once():
    assert len({row.id for row in ROWS}) == len(ROWS)
