"""Checkpoints: one safetensors file with everything needed to sample or to resume.

Tensors (no pickle anywhere): ``model.*`` (weights), ``ema.*`` (EMA weights, used for
evaluation and sampling), ``loss.*`` (learnable loss/schedule parameters, if any),
``optimizer.<param index>.<key>`` (optimizer state) and ``rng.*`` (random generator states
as bytes). The safetensors metadata holds JSON: the format tag, the step, the fully resolved
pipeline config, the optimizer's parameter groups and the SHA-256 of every tensor's bytes.

:func:`load_checkpoint` checks every tensor against its SHA-256, so a file whose bytes changed
on disk or in transfer is refused with the name of the first damaged tensor instead of giving
wrong weights. The hashes detect corruption, not tampering: whoever can write the file can
rewrite them. A checkpoint written before the hashes existed loads with a
:class:`UnverifiedCheckpointWarning`, and the next save of a resumed run adds them. The config
in the metadata is resolved: load it with
:func:`ddkit.contrib.pipeline_config.load_resolved`, which never interpolates it again.

Saving is atomic: the file is written under a temporary name in the same directory, flushed
to disk, then moved over the old checkpoint with :func:`os.replace`; an interrupted save
leaves the previous checkpoint intact. A process killed during a save leaves its temporary
behind (as large as the checkpoint); temporaries are named ``.<name>.<pid>-<random>.ddkit-tmp``
so that :func:`temporaries` finds exactly those of one file, and training removes its own
when it starts.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import re
import secrets
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import Tensor

from ddkit import DDKitError

FORMAT = "ddkit-checkpoint/1"
CHECKPOINT_NAME = "checkpoint.safetensors"
#: the suffix of every temporary file written by :func:`atomic_write_bytes` and :func:`save_checkpoint`
TEMPORARY_SUFFIX = ".ddkit-tmp"


class CheckpointError(DDKitError):
    """A checkpoint is missing, unreadable, corrupted or from an incompatible run."""


class UnverifiedCheckpointWarning(UserWarning):
    """A checkpoint has no tensor hashes (written by an older ddkit): its bytes are not checked."""


def tensor_sha256(tensor: Tensor) -> str:
    """The SHA-256 (hex) of a tensor's bytes in memory order, as safetensors stores them."""
    data = tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy()
    return hashlib.sha256(memoryview(data)).hexdigest()


@dataclass
class Checkpoint:
    """A loaded checkpoint: ``tensors`` by full key, and the JSON metadata."""

    path: Path
    step: int
    config: dict[str, Any]
    tensors: dict[str, Tensor]
    meta: dict[str, Any] = field(default_factory=dict)

    def group(self, prefix: str) -> dict[str, Tensor]:
        """Tensors under ``prefix.`` with the prefix removed."""
        head = prefix + "."
        return {k[len(head):]: v for k, v in self.tensors.items() if k.startswith(head)}

    def weights(self, prefer_ema: bool = True) -> dict[str, Tensor]:
        """The network weights to use for inference: EMA if present (and preferred)."""
        ema = self.group("ema")
        return ema if (prefer_ema and ema) else self.group("model")

    def check_fits(self, module: torch.nn.Module, state: dict[str, Tensor], *, what: str) -> None:
        """Refuse ``state`` (the ``what.*`` tensors) for ``module`` when its tensors do not match
        the module the config builds (missing, unexpected, another shape): a
        :class:`CheckpointError` that counts them and names the first of each."""
        expected = module.state_dict()
        missing = sorted(expected.keys() - state.keys())
        unexpected = sorted(state.keys() - expected.keys())
        reshaped = [key for key in sorted(expected.keys() & state.keys())
                    if isinstance(expected[key], Tensor) and expected[key].shape != state[key].shape]
        problems = []
        if missing:
            problems.append(f"{len(missing)} missing (first {what}.{missing[0]})")
        if unexpected:
            problems.append(f"{len(unexpected)} not in the network (first {what}.{unexpected[0]})")
        if reshaped:
            key = reshaped[0]
            problems.append(f"{len(reshaped)} of another shape (first {what}.{key}: {list(state[key].shape)} in "
                            f"the file, {list(expected[key].shape)} in the network)")
        if problems:
            raise CheckpointError(f"{self.path}: the {what} tensors do not match the network its config builds: "
                                  + "; ".join(problems))

    def load_into(self, module: torch.nn.Module, state: dict[str, Tensor], *, what: str) -> None:
        """Load ``state`` (the ``what.*`` tensors) into ``module``, after :meth:`check_fits`."""
        self.check_fits(module, state, what=what)
        module.load_state_dict(state)


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def temporary_path(path: Path) -> Path:
    """A new temporary name beside ``path``, unique per call: ``.<name>.<pid>-<random>.ddkit-tmp``."""
    path = Path(path)
    return path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}{TEMPORARY_SUFFIX}")


def temporaries(path: Path) -> list[Path]:
    """The temporary files of ``path`` in its directory (see :func:`temporary_path`): saves in
    progress, or left behind by a process that was killed while saving."""
    path = Path(path)
    return sorted(path.parent.glob(f".{glob.escape(path.name)}.*{TEMPORARY_SUFFIX}"))


def _os_error(exc: Exception, path: Path) -> OSError:
    """The :class:`OSError` behind a safetensors error (its errno read from the message), naming ``path``."""
    found = re.search(r"os error (\d+)", str(exc))
    if found is None:
        return OSError(f"{path}: {exc}")
    code = int(found.group(1))
    return OSError(code, os.strerror(code), str(path))


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temporary file, fsync, :func:`os.replace`)."""
    path = Path(path)
    tmp = temporary_path(path)
    try:
        with open(tmp, "xb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:  # a failed write() names no file: name the one being written
        if exc.filename is None:
            exc.filename = str(path)
        raise
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_dir(path.parent)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def optimizer_tensors(optimizer: torch.optim.Optimizer | Mapping[str, Any]) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Split an optimizer state (an optimizer, or its ``state_dict()``) into tensors (for
    safetensors) and JSON (groups, scalars)."""
    state = optimizer if isinstance(optimizer, Mapping) else optimizer.state_dict()
    tensors, scalars = {}, {}
    for index, values in state["state"].items():
        for key, value in values.items():
            if isinstance(value, Tensor):
                tensors[f"optimizer.{index}.{key}"] = value.detach().contiguous()
            else:
                scalars.setdefault(str(index), {})[key] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def optimizer_state(tensors: dict[str, Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    """Inverse of :func:`optimizer_tensors`: a ``state_dict`` for ``load_state_dict``. Metadata
    of another shape is a :class:`CheckpointError`."""
    try:
        return _optimizer_state(tensors, meta)
    except (KeyError, ValueError, TypeError, AttributeError) as exc:
        raise CheckpointError(f"the checkpoint's optimizer state is malformed ({type(exc).__name__}: "
                              f"{str(exc)[:120]})") from None


def _optimizer_state(tensors: dict[str, Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith("optimizer."):
            _, index, name = key.split(".", 2)
            state.setdefault(int(index), {})[name] = value
    for index, values in meta.get("scalars", {}).items():
        state.setdefault(int(index), {}).update(values)
    groups = []
    for group in meta["param_groups"]:
        group = dict(group)
        if isinstance(group.get("betas"), list):
            group["betas"] = tuple(group["betas"])
        groups.append(group)
    return {"state": state, "param_groups": groups}


def save_checkpoint(path: Path, *, step: int, config: dict[str, Any], model: torch.nn.Module | Mapping[str, Tensor],
                    ema: torch.nn.Module | Mapping[str, Tensor] | None = None,
                    loss: torch.nn.Module | Mapping[str, Tensor] | None = None,
                    optimizer: torch.optim.Optimizer | Mapping[str, Any] | None = None,
                    rng: dict[str, Tensor] | None = None, extra: dict[str, Any] | None = None) -> Path:
    """Write a checkpoint atomically; returns its path. ``model``, ``ema`` and ``loss`` are
    modules or their state dicts (e.g. gathered from shards), ``optimizer`` an optimizer or
    its state dict."""
    path = Path(path)
    tensors: dict[str, Tensor] = {}
    for prefix, module in (("model", model), ("ema", ema), ("loss", loss)):
        if module is not None:
            for key, value in (module if isinstance(module, Mapping) else module.state_dict()).items():
                tensors[f"{prefix}.{key}"] = value.detach().cpu().contiguous().clone()
    meta: dict[str, Any] = {"format": FORMAT, "step": step, "config": config, **(extra or {})}
    if optimizer is not None:
        opt_tensors, meta["optimizer"] = optimizer_tensors(optimizer)
        tensors.update({k: v.cpu().clone() for k, v in opt_tensors.items()})
    for key, value in (rng or {}).items():
        tensors[f"rng.{key}"] = value.detach().cpu().contiguous().clone()
    meta["sha256"] = {key: tensor_sha256(value) for key, value in tensors.items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_path(path)
    try:
        try:
            save_file(tensors, str(tmp), metadata={"ddkit": json.dumps(meta)})
        except SafetensorError as exc:  # safetensors reports a failed write (a full disk, ...) as its own error
            raise _os_error(exc, path) from exc
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    _fsync_dir(path.parent)
    return path


def load_checkpoint(path: Path | str, device: str | torch.device = "cpu") -> Checkpoint:
    """Read a checkpoint written by :func:`save_checkpoint` (safetensors: no code runs)."""
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT_NAME
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        with safe_open(str(path), framework="pt", device=str(device)) as f:
            raw = (f.metadata() or {}).get("ddkit")
            tensors = {key: f.get_tensor(key) for key in f.keys()}
    except Exception as exc:
        raise CheckpointError(f"cannot read checkpoint {path}: {exc}") from exc
    if raw is None:
        raise CheckpointError(f"{path} is a safetensors file but not a ddkit checkpoint (no 'ddkit' metadata)")
    meta = _read_meta(path, raw)
    _verify(path, tensors, meta.get("sha256"))
    return Checkpoint(path=path, step=meta["step"], config=meta["config"], tensors=tensors, meta=meta)


def _read_meta(path: Path, raw: str) -> dict[str, Any]:
    """The JSON metadata, with the fields every reader relies on checked."""
    try:
        meta = json.loads(raw)
    except ValueError as exc:
        raise CheckpointError(f"{path}: the checkpoint's metadata is not valid JSON ({exc})") from None
    if not isinstance(meta, dict):
        raise CheckpointError(f"{path}: the checkpoint's metadata is a {type(meta).__name__}, expected a JSON object")
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path} has checkpoint format {meta.get('format')!r}; this ddkit reads {FORMAT!r}")
    expected = {"step": int, "config": dict, "sha256": (dict, type(None))}
    optional = {"ema_updates": int, "optimizer": dict}  # written by training
    for key, kind in [*expected.items(), *((key, kind) for key, kind in optional.items() if key in meta)]:
        value = meta.get(key)
        if not isinstance(value, kind) or isinstance(value, bool):
            raise CheckpointError(f"{path}: the checkpoint's metadata field {key!r} is {value!r:.60}, "
                                  f"expected {'an integer' if kind is int else 'a JSON object'}")
    if "optimizer" in meta and not isinstance(meta["optimizer"].get("param_groups"), list):
        raise CheckpointError(f"{path}: the checkpoint's metadata field 'optimizer' has no list of "
                              f"'param_groups' (got {meta['optimizer'].get('param_groups')!r:.60})")
    return meta


def _verify(path: Path, tensors: dict[str, Tensor], hashes: dict[str, Any] | None) -> None:
    """Every tensor against the SHA-256 recorded when it was saved."""
    if hashes is None:
        warnings.warn(f"{path} has no tensor hashes (written by an older ddkit); its bytes cannot be "
                      f"checked for corruption", UnverifiedCheckpointWarning, stacklevel=3)
        return
    for key in sorted(tensors.keys() | hashes.keys()):
        if key not in hashes:
            raise CheckpointError(f"{path}: tensor {key!r} has no recorded SHA-256; the file was changed after it was saved")
        if key not in tensors:
            raise CheckpointError(f"{path}: tensor {key!r} is recorded in the metadata but missing from the file")
        if tensor_sha256(tensors[key]) != hashes[key]:
            raise CheckpointError(f"{path}: tensor {key!r} does not match the SHA-256 recorded when it was saved; "
                                  f"the file is corrupted (restore it from a copy)")
