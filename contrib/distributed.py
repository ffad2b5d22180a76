r"""Data-parallel training on torch's own engine: ``torch.distributed`` with DDP or FSDP2.

Launch any training command under ``torchrun``; ddkit reads the environment it sets
(``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``)::

    torchrun --standalone --nproc_per_node=4 -m ddkit.cli run pipelines/owt_small.yaml

Without those variables (or with one process) nothing here is used and training is a plain
single-process loop. The pipeline's ``train.distributed`` section chooses the strategy:

* ``ddp`` — :class:`torch.nn.parallel.DistributedDataParallel`: every process holds the
  whole model; gradients are averaged across processes during the backward pass.
* ``fsdp`` — FSDP2's :func:`torch.distributed.fsdp.fully_shard`: each transformer block
  (a model's ``blocks`` list) and the rest of the model are sharded across processes;
  parameters are gathered for each block's forward and backward and freed after.

The process group uses NCCL on CUDA and gloo on the CPU (``train.distributed.backend``);
each process takes the GPU ``cuda:LOCAL_RANK``. Control decisions that must agree across
processes (stop after a signal, a checkpoint that is due by time) travel on a separate gloo
group, so they never wait for the GPU.

Randomness (see :func:`seed_for`) is keyed by ``(seed, stream, step, micro-batch)``, where
micro-batch :math:`j = r\,A + a` is the :math:`a`-th of :math:`A` (``train.grad_accum``) on
process :math:`r`, out of :math:`M = K A` per optimizer step. The global batch of a step is
therefore the same set of micro-batches for every :math:`K` with the same :math:`M`: one
process with ``grad_accum=2`` takes the same steps as two processes with ``grad_accum=1``.
"""

from __future__ import annotations

import datetime
import os
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn

from ddkit.config import ConfigError

#: key streams of :func:`seed_for`
DATA, LOSS, TIMES, GLOBAL_RNG, VALIDATION, EVALUATION = range(1, 7)


def seed_for(seed: int, stream: int, *counters: int) -> int:
    """A 63-bit seed for one random stream, mixed from the pipeline's ``seed``, the stream and
    counters (step, micro-batch, batch) by NumPy's :class:`~numpy.random.SeedSequence`:
    nearby keys give unrelated seeds, and the same key gives the same seed on any process."""
    words = [seed % 2**64, stream, *counters]
    return int(np.random.SeedSequence(words).generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))


@dataclass
class World:
    """This process's place among the training processes (``size == 1``: alone)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    backend: str | None = None
    #: a gloo group for small control messages (``None``: the default group is gloo already)
    control: Any = None

    @property
    def distributed(self) -> bool:
        return self.size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0 writes metrics, plots, checkpoints, samples and reports."""
        return self.rank == 0

    def sum(self, tensor: Tensor) -> Tensor:
        """The sum over processes of a tensor on this process's device (a copy)."""
        out = tensor.clone()
        if self.distributed:
            dist.all_reduce(out, op=dist.ReduceOp.SUM)
        return out

    def agree(self, values: list[int]) -> list[int]:
        """The element-wise maximum over processes of small integer flags (CPU, gloo)."""
        if not self.distributed:
            return values
        flags = torch.tensor(values, dtype=torch.int64)
        dist.all_reduce(flags, op=dist.ReduceOp.MAX, group=self.control)
        return flags.tolist()

    def from_main(self, value: Any) -> Any:
        """Rank 0's ``value`` on every process (a picklable object from ddkit's own code)."""
        if not self.distributed:
            return value
        box = [value if self.is_main else None]
        dist.broadcast_object_list(box, src=0, group=self.control)
        return box[0]

    def gather(self, value: Any) -> list[Any]:
        """Every process's ``value``, in rank order (picklable objects from ddkit's own code)."""
        if not self.distributed:
            return [value]
        out: list[Any] = [None] * self.size
        dist.all_gather_object(out, value, group=self.control)
        return out

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier(group=self.control)

    def close(self) -> None:
        """Leave the process group (the end of a command)."""
        if self.distributed and dist.is_initialized():
            dist.destroy_process_group()


def launched_processes() -> int:
    """``WORLD_SIZE`` as set by ``torchrun`` (1 when not launched by it)."""
    value = os.environ.get("WORLD_SIZE", "1")
    try:
        size = int(value)
    except ValueError:
        raise ConfigError(f"WORLD_SIZE={value!r} is not an integer (it is set by torchrun)") from None
    if size < 1:
        raise ConfigError(f"WORLD_SIZE={size}: expected at least 1 process")
    return size


def _env_int(name: str) -> int:
    value = os.environ.get(name)
    if value is None:
        raise ConfigError(f"WORLD_SIZE is set but {name} is not: launch with torchrun, which sets both")
    try:
        return int(value)
    except ValueError:
        raise ConfigError(f"{name}={value!r} is not an integer (it is set by torchrun)") from None


def setup(train_cfg: Any, device: str | None = None) -> tuple[World, str | None]:
    """Join the process group that ``torchrun`` describes, if any. Returns the world and the
    device this process trains on (``cuda:LOCAL_RANK`` on GPUs, else ``device`` unchanged).

    ``train_cfg`` is the pipeline's ``train`` section: its ``device`` and ``distributed``
    settings. A CUDA device with the gloo backend works; NCCL on the CPU is refused."""
    size = launched_processes()
    if size == 1:
        return World(), device
    rank, local_rank = _env_int("RANK"), _env_int("LOCAL_RANK")
    cfg = train_cfg.distributed
    wanted = device or train_cfg.device
    use_cuda = wanted.startswith("cuda") or (wanted == "auto" and torch.cuda.is_available())
    if use_cuda and not torch.cuda.is_available():
        raise ConfigError(f"train.device: CUDA is not available on this machine (got {wanted!r}); use auto or cpu")
    backend = cfg.backend if cfg.backend != "auto" else ("nccl" if use_cuda else "gloo")
    if backend == "nccl" and not use_cuda:
        raise ConfigError(f"train.distributed.backend: nccl needs CUDA devices but this run trains on {wanted!r}; "
                          f"use gloo (or auto) on the CPU")
    if use_cuda:
        if local_rank >= torch.cuda.device_count():
            raise ConfigError(f"LOCAL_RANK={local_rank} but this machine has {torch.cuda.device_count()} CUDA "
                              f"device(s): start at most that many processes per node")
        torch.cuda.set_device(local_rank)
        device = f"cuda:{local_rank}"
    timeout = datetime.timedelta(seconds=cfg.timeout_s)
    if not dist.is_initialized():
        dist.init_process_group(backend, timeout=timeout)
    control = dist.new_group(backend="gloo", timeout=timeout) if backend != "gloo" else None
    return World(rank=rank, size=size, local_rank=local_rank, backend=backend, control=control), device


class TrainStep(nn.Module):
    """The module that data parallelism wraps: the network and the loss (whose learnable
    parameters, e.g. a schedule's, are trained and averaged too). ``forward(x0, generator)``
    is the loss's mean nats per token on this process's micro-batch."""

    def __init__(self, model: nn.Module, loss: nn.Module):
        super().__init__()
        self.model, self.loss = model, loss
        # the network as the loss calls it (compiled, or the network itself); not a submodule:
        # it shares the network's parameters
        object.__setattr__(self, "denoiser", model)

    def forward(self, x0: Tensor, generator: torch.Generator) -> Tensor:
        return self.loss(self.denoiser, x0, generator=generator).loss


#: methods of a network that losses and samplers call besides ``forward``; FSDP gathers the
#: parameters for them too
FORWARD_METHODS = ("two_stream",)


def shard_units(model: nn.Module) -> list[nn.Module]:
    """The modules FSDP shards one by one: the entries of the model's ``blocks`` list when the
    model declares ``fsdp_blocks = True`` (it calls each block through the block's own
    ``forward``, where FSDP gathers its parameters). Everything else is sharded as one unit
    with the root: correct for any network, with less memory saved during the forward."""
    blocks = getattr(model, "blocks", None)
    return list(blocks) if getattr(model, "fsdp_blocks", False) and isinstance(blocks, nn.ModuleList) else []


class Parallel:
    """A :class:`TrainStep` prepared for the world: unchanged on one process, wrapped by DDP,
    or sharded by FSDP2 (in place). ``ema`` (the EMA copy of the network, if any) is sharded
    like the network under FSDP, so that the EMA update stays local to each shard."""

    def __init__(self, step: TrainStep, world: World, device: torch.device, cfg: Any,
                 ema: nn.Module | None = None):
        self.step, self.world, self.strategy = step, world, cfg.strategy if world.distributed else "none"
        if self.strategy == "ddp":
            self.call = nn.parallel.DistributedDataParallel(
                step, device_ids=[device.index] if device.type == "cuda" else None,
                find_unused_parameters=cfg.find_unused_parameters)
        elif self.strategy == "fsdp":
            from torch.distributed.device_mesh import init_device_mesh
            from torch.distributed.fsdp import fully_shard, register_fsdp_forward_method

            mesh = init_device_mesh(device.type, (world.size,))
            for module in ([ema] if ema is not None else []) + [step.model]:
                for unit in shard_units(module):
                    fully_shard(unit, mesh=mesh)
            if ema is not None:  # validation calls the EMA network directly
                fully_shard(ema, mesh=mesh)
                for name in FORWARD_METHODS:
                    if hasattr(ema, name):
                        register_fsdp_forward_method(ema, name)
            fully_shard(step, mesh=mesh)
            self.call = step
        else:
            self.call = step

    @property
    def sharded(self) -> bool:
        return self.strategy == "fsdp"

    @contextmanager
    def accumulating(self, last: bool) -> Iterator[None]:
        """Around one micro-batch's forward and backward: gradients are exchanged only on the
        ``last`` micro-batch of a step (DDP ``no_sync``, FSDP2 ``set_requires_gradient_sync``)."""
        if self.strategy == "ddp" and not last:
            with self.call.no_sync():
                yield
        elif self.strategy == "fsdp":
            self.step.set_requires_gradient_sync(last)
            yield
        else:
            with nullcontext():
                yield

    def reshard(self, module: nn.Module) -> None:
        """Free the gathered parameters of a sharded root that ran forward only (FSDP2 keeps a
        root's parameters gathered after its forward), so its parameters are shards again."""
        if self.sharded:
            module.reshard()

    def full_state(self, module: nn.Module, *, everywhere: bool = False) -> dict[str, Tensor]:
        """``module``'s whole state dict; collective under FSDP (every process calls it), where
        it is gathered onto rank 0's CPU (the other ranks get an empty dict) or, with
        ``everywhere``, onto every process's device."""
        if not self.sharded:
            return module.state_dict()
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        options = StateDictOptions(full_state_dict=True, cpu_offload=not everywhere)
        return get_model_state_dict(module, options=options)

    def load_full_state(self, module: nn.Module, state: Mapping[str, Tensor]) -> None:
        """Load a whole state dict (every process holds it) into ``module``, sharded or not."""
        if not self.sharded:
            module.load_state_dict(state)
            return
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

        set_model_state_dict(module, dict(state), options=StateDictOptions(full_state_dict=True))

    def optimizer_state(self, optimizer: torch.optim.Optimizer, params: list[nn.Parameter]) -> dict[str, Any]:
        """The optimizer's whole state with parameters numbered by their place in ``params``
        (the layout of :meth:`torch.optim.Optimizer.state_dict`), on rank 0; collective under
        FSDP, where the other ranks get an empty state."""
        if not self.sharded:
            return optimizer.state_dict()
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

        full = get_optimizer_state_dict(self.step, optimizer,
                                        options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        if not self.world.is_main:
            return {"state": {}, "param_groups": []}
        index = self._fqn_index(params)
        groups = [{**group, "params": [index[name] for name in group["params"]]} for group in full["param_groups"]]
        return {"state": {index[name]: value for name, value in full["state"].items()}, "param_groups": groups}

    def load_optimizer_state(self, optimizer: torch.optim.Optimizer, params: list[nn.Parameter],
                             state: dict[str, Any]) -> None:
        """Inverse of :meth:`optimizer_state` (every process holds ``state``)."""
        if not self.sharded:
            optimizer.load_state_dict(state)
            return
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

        names = {i: name for name, i in self._fqn_index(params).items()}
        groups = [{**group, "params": [names[i] for i in group["params"]]} for group in state["param_groups"]]
        full = {"state": {names[i]: value for i, value in state["state"].items()}, "param_groups": groups}
        set_optimizer_state_dict(self.step, optimizer, full, options=StateDictOptions(full_state_dict=True))

    def _fqn_index(self, params: list[nn.Parameter]) -> dict[str, int]:
        place = {id(p): i for i, p in enumerate(params)}
        return {name: place[id(p)] for name, p in self.step.named_parameters() if id(p) in place}


def grad_norm_value(norm: Tensor) -> Tensor:
    """A gradient norm as a plain tensor (FSDP2's clipping returns a replicated DTensor)."""
    full = getattr(norm, "full_tensor", None)
    return full() if full is not None else norm


def warn_on_main(world: World, message: str, category: type[Warning] = UserWarning) -> None:
    if world.is_main:
        warnings.warn(message, category, stacklevel=2)
