r"""Numba CPU kernels: the operations of :mod:`ddkit.kernels` compiled with ``njit``
(``parallel=True`` over rows, ``cache=True``), exactly the reference inverse CDF.

Threads, forks and the threading layer
--------------------------------------
* Thread budget: every call runs with ``min(torch.get_num_threads(), NUMBA_NUM_THREADS)``
  Numba threads (restored afterwards), so the two pools never add up to more than the budget
  torch was given (``OMP_NUM_THREADS`` or ``torch.set_num_threads``); torch and Numba
  regions alternate, they never overlap. Inside a ``DataLoader`` worker torch runs one thread,
  so the kernels do too.
* Threading layer: unless ``NUMBA_THREADING_LAYER`` is set, ddkit asks Numba for a
  ``forksafe`` layer before its first parallel launch: TBB where it is installed, otherwise
  the built-in ``workqueue``. Numba's default on Linux would be GNU OpenMP, which is not
  fork-safe (a forked ``DataLoader`` worker that runs a parallel kernel after the parent did
  aborts) and would start a second OpenMP pool next to torch's. If the process already ran a
  parallel Numba function, the layer is fixed and this choice has no effect.
* ``workqueue`` is not thread-safe, so kernel calls hold a process-wide lock (re-created in
  forked children, where a lock held by another thread of the parent would never be released).

Compilation and its cache
-------------------------
Importing this module does not import Numba; the first kernel call compiles (or loads from the
on-disk cache) the functions it needs, and :meth:`NumbaKernels.prepare` does it ahead of time
(compiling everything takes about a minute on a fresh install, loading it under a second).
The cache lives in ``NUMBA_CACHE_DIR`` if that is set, else in the user cache directory,
``platformdirs.user_cache_dir("ddkit")/numba`` (``~/.cache/ddkit/numba`` on Linux), never
next to the installed sources, which may be read-only or shared between environments:
:func:`use_cache_dir` sets ``NUMBA_CACHE_DIR`` (so subprocesses share the cache) before the
kernels module is imported, since Numba fixes a function's cache location when it is decorated.
"""

from __future__ import annotations

import importlib.util
import os
import threading
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import platformdirs
import torch
from torch import Tensor

import ddkit
from ddkit import kernels as ops_module
from ddkit.kernels import KernelBackend, TokenFilter, raise_for_code

#: operations for which ``backend="auto"`` prefers Numba on CPU tensors (the performance page of the documentation measures why)
AUTO_OPS = frozenset({"categorical", "masked_step", "commit_topk", "mask_noise", "uniform_noise", "token_probability",
                      "any_equal"})
#: the remasking arguments of a masked step without remasking (never read; typed as the real ones)
_NO_REMASK = (np.zeros((1, 1)), np.zeros((1, 1)), np.zeros((1, 1), np.bool_))
#: rows of half-precision logits converted to float32 at a time
HALF_CHUNK_ELEMENTS = 1 << 20
#: row chunks per thread in a categorical kernel (balances rows of unequal cost)
CHUNKS_PER_THREAD = 4
#: categorical work (selected rows x V) up to which one thread samples without waking others:
#: a parallel launch on the workqueue layer costs about 0.5 ms on the 2-vCPU test machine,
#: which two threads win back only from about 2^18 logits (measured on the performance page of the documentation)
SERIAL_WORK = 1 << 18

_lock = threading.Lock()
_impl = None


def _new_lock_after_fork() -> None:
    global _lock
    _lock = threading.Lock()


os.register_at_fork(after_in_child=_new_lock_after_fork)


def available() -> bool:
    """Whether Numba is installed."""
    return importlib.util.find_spec("numba") is not None


def default_cache_dir() -> Path:
    """The user cache directory of the compiled kernels when ``NUMBA_CACHE_DIR`` is not set."""
    return Path(platformdirs.user_cache_dir("ddkit")) / "numba"


def use_cache_dir() -> str:
    """Point Numba's on-disk cache at ``NUMBA_CACHE_DIR``, or at :func:`default_cache_dir` if
    that is unset (the variable is then set for this process and its children); returns the
    directory. Works whether or not Numba was imported before."""
    if not os.environ.get("NUMBA_CACHE_DIR"):
        os.environ["NUMBA_CACHE_DIR"] = str(default_cache_dir())
    import numba

    numba.config.reload_config()  # Numba reads its environment when imported and on reload
    return numba.config.CACHE_DIR


def kernels():
    """The compiled kernels module (imports Numba, sets the cache directory and picks the
    threading layer on first use)."""
    global _impl
    if _impl is None:
        use_cache_dir()  # first: a reload of Numba's environment would undo the threading layer set below
        import numba

        if "NUMBA_THREADING_LAYER" not in os.environ:
            numba.config.THREADING_LAYER = "forksafe"
        from . import _numba_impl

        _impl = _numba_impl
    return _impl


def thread_budget() -> int:
    """Numba threads for the next call: torch's budget, capped by Numba's pool size."""
    import numba

    return max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS))


@contextmanager
def _threads():
    import numba

    with _lock:
        previous = numba.get_num_threads()
        numba.set_num_threads(thread_budget())
        try:
            yield
        finally:
            numba.set_num_threads(previous)


def _sample_rows(logits: np.ndarray, selected: np.ndarray, uniforms: np.ndarray, out: np.ndarray, options) -> int:
    """Serial below :data:`SERIAL_WORK` logits (waking threads would cost more), else parallel;
    returns the lowest error code written (0: none)."""
    impl = kernels()
    V = logits.shape[1]
    if selected.shape[0] * V <= SERIAL_WORK or thread_budget() == 1:
        return impl.sample_span(logits, selected, uniforms, out, *options, 0, selected.shape[0], np.empty((4, V)),
                                np.empty((2, V)))
    with _threads():
        return impl.sample_rows(logits, selected, uniforms, out, *options, CHUNKS_PER_THREAD * thread_budget())


def _cache_misses(impl) -> int:
    """How many compilations the kernels module's functions needed so far (not in the cache)."""
    return sum(sum(value.stats.cache_misses.values()) for value in vars(impl).values()
               if hasattr(value, "stats") and hasattr(value.stats, "cache_misses"))


class NumbaKernels(KernelBackend):
    """CPU only; ``auto`` prefers it on CPU tensors for :data:`AUTO_OPS`."""

    name = "numba"
    checks_uniforms = True  # inside the kernels, while they read them
    checks_codes = True  # the sampling kernels return the lowest code they wrote

    def prepare(self, ops: tuple[str, ...]) -> bool:
        """Compile (or load from the cache) the kernels of ``ops`` for every argument type
        ddkit passes them (float32 and float64 logits; the serial and the parallel sampling
        kernel) by calling them on tiny inputs; returns whether anything was compiled."""
        impl = kernels()
        misses = _cache_misses(impl)
        x = torch.tensor([[0, 2]])
        u = torch.full((1, 2), 0.5, dtype=torch.float64)
        token_filter = TokenFilter(1.0, None, None)
        options = (float(token_filter.temperature), token_filter.k_for(3), token_filter.p, False)
        for dtype in (torch.float32, torch.float64):
            logits = torch.zeros(1, 2, 3, dtype=dtype)
            if "categorical" in ops:
                ops_module.categorical(logits, u, backend=self.name)
            if "masked_step" in ops:
                ops_module.masked_step(x, logits, 1.0, u, u, mask_id=2, backend=self.name)
                ops_module.masked_step(x, logits, 1.0, u, u, mask_id=2, remask_prob=0.5, u_remask=u, fixed=u < 0,
                                       backend=self.name)
            if "token_probability" in ops:
                ops_module.token_probability(logits, torch.zeros(1, 2, dtype=torch.long), backend=self.name)
            if "categorical" in ops or "masked_step" in ops:  # the parallel kernel, used above SERIAL_WORK
                with _threads():
                    impl.sample_rows(logits[0].numpy(), np.arange(2), u[0].numpy(), np.empty(2, np.int64),
                                     *options, CHUNKS_PER_THREAD * thread_budget())
        if "commit_topk" in ops:
            ops_module.commit_topk(u, u > 0, 1, backend=self.name)
        if "mask_noise" in ops:
            ops_module.mask_noise(x, 0.5, u, mask_id=2, backend=self.name)
        if "uniform_noise" in ops:
            ops_module.uniform_noise(x, 0.5, u, u, vocab_size=3, backend=self.name)
        if "any_equal" in ops:
            ops_module.any_equal(x, 2, backend=self.name)
        return _cache_misses(impl) > misses

    def supports(self, op: str, device: torch.device) -> bool:
        return device.type == "cpu" and hasattr(self, op) and available()

    def auto_priority(self, op: str, device: torch.device) -> int | None:
        return 10 if op in AUTO_OPS and self.supports(op, device) else None

    def categorical(self, logits: Tensor, uniforms: Tensor, token_filter: TokenFilter) -> Tensor:
        out = np.empty(logits.shape[0], np.int64)
        raise_for_code(self._sample(logits, np.arange(logits.shape[0]), uniforms.numpy(), out, token_filter, False))
        return torch.from_numpy(out)

    def masked_step(self, x: Tensor, logits: Tensor, p_unmask: Tensor, u_move: Tensor, u_token: Tensor,
                    mask_id: int, token_filter: TokenFilter, argmax: bool,
                    remask: tuple[Tensor, Tensor, Tensor] | None) -> Tensor:
        out = np.empty(tuple(x.shape), np.int64)
        sigma, u_remask, fixed = _NO_REMASK if remask is None else (t.numpy() for t in remask)
        selected, ok = kernels().select_moving(x.numpy(), p_unmask.numpy(), u_move.numpy(), u_token.numpy(), mask_id,
                                               out, sigma, u_remask, fixed, remask is not None)
        if not ok:
            raise ValueError("u_move, u_token and u_remask must lie in [0, 1)")
        if selected.shape[0]:
            raise_for_code(self._sample(logits, selected, u_token.numpy().reshape(-1), out.reshape(-1), token_filter,
                                        argmax))
        return torch.from_numpy(out)

    def _sample(self, logits: Tensor, selected: np.ndarray, uniforms: np.ndarray, out: np.ndarray,
                token_filter: TokenFilter, argmax: bool) -> int:
        """Sample the ``selected`` rows into ``out``; returns the lowest error code (0: none)."""
        V = logits.shape[1]
        options = (float(token_filter.temperature), token_filter.k_for(V), token_filter.p, argmax)
        if logits.dtype in (torch.float32, torch.float64):
            return _sample_rows(logits.numpy(), selected, uniforms, out, options)
        # float16 / bfloat16: convert only the selected rows, a chunk at a time (exact in float32)
        worst = 0
        step = max(1, HALF_CHUNK_ELEMENTS // V)
        for start in range(0, selected.shape[0], step):
            chunk = selected[start:start + step]
            rows = logits.index_select(0, torch.from_numpy(chunk)).float().numpy()
            local = np.empty(chunk.shape[0], np.int64)
            worst = min(worst, _sample_rows(rows, np.arange(chunk.shape[0]), uniforms[chunk], local, options))
            out[chunk] = local
        return worst

    def commit_topk(self, scores: Tensor, eligible: Tensor, k: Tensor) -> Tensor:
        out = np.empty(tuple(scores.shape), np.bool_)
        kernels().commit_topk(scores.numpy(), eligible.numpy(), k.numpy(), out)
        return torch.from_numpy(out)

    def token_probability(self, logits: Tensor, tokens: Tensor) -> Tensor:
        out = np.empty(logits.shape[0], np.float64)
        kernels().token_probability(logits.numpy(), tokens.numpy(), out)
        return torch.from_numpy(out)

    def any_equal(self, x: Tensor, value: int) -> bool:
        return kernels().any_equal(x.numpy(), value)

    def mask_noise(self, x0: Tensor, keep: Tensor, uniforms: Tensor, mask_id: int) -> Tensor:
        out = np.empty(tuple(x0.shape), np.int64)
        if not kernels().mask_noise(x0.numpy(), keep.numpy(), uniforms.numpy(), mask_id, out):
            raise ValueError("uniforms must lie in [0, 1)")
        return torch.from_numpy(out)

    def uniform_noise(self, x0: Tensor, keep: Tensor, u_keep: Tensor, u_token: Tensor, vocab_size: int) -> Tensor:
        out = np.empty(tuple(x0.shape), np.int64)
        if vocab_size >= 2**31:  # the kernel truncates through int32
            raise ValueError(f"vocab_size must be below 2^31, got {vocab_size}")
        if not kernels().uniform_noise(x0.numpy(), keep.numpy(), u_keep.numpy(), u_token.numpy(), vocab_size, out):
            raise ValueError("u_keep and u_token must lie in [0, 1)")
        return torch.from_numpy(out)


@ddkit.hookimpl
def register_kernels(register):
    register("numba", NumbaKernels, summary="Numba CPU kernels (parallel, cached): the reference inverse CDF")
