"""Hook specifications: the one place where ddkit says what a plugin may provide.

A plugin is a module (or any object) whose functions are marked with :data:`hookimpl` and
named after one of the specifications below. Each hook receives a ``register`` callable and
calls it once per component::

    import ddkit

    @ddkit.hookimpl
    def register_schedules(register):
        register("my-schedule", MySchedule, summary="alpha(t) = 1 - t^3")

``register(name, factory, *, params=None, summary="")``: the component's parameters are those
of the factory's signature (:func:`ddkit.params_model`); an explicit pydantic ``params``
model must agree with that signature (same names and defaults), else the component is
skipped with a warning. Built-in components are registered through exactly these hooks,
found through the ``ddkit`` entry-point group like any third-party distribution.
"""

from __future__ import annotations

import pluggy

PROJECT_NAME = "ddkit"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)

#: Component kinds, each served by the hook ``register_<kind>s``.
KINDS = (
    "schedule",
    "process",
    "parameterization",
    "loss",
    "sampler",
    "corrector",
    "unmasking_rule",
    "model",
    "dataset",
    "tokenizer",
    "kernel",
)


@hookspec
def register_schedules(register):
    """Register :class:`ddkit.Schedule` factories: ``register(name, factory, summary=)``."""


@hookspec
def register_processes(register):
    """Register :class:`ddkit.Process` factories (forward noising CTMCs)."""


@hookspec
def register_parameterizations(register):
    """Register :class:`ddkit.Parameterization` factories (network output -> model quantities)."""


@hookspec
def register_losses(register):
    """Register :class:`ddkit.Loss` factories (ELBOs and other training objectives)."""


@hookspec
def register_samplers(register):
    """Register :class:`ddkit.Sampler` factories (reverse-process simulators)."""


@hookspec
def register_correctors(register):
    """Register :class:`ddkit.Corrector` factories (run after a sampler's predictor steps)."""


@hookspec
def register_unmasking_rules(register):
    """Register :class:`ddkit.UnmaskingRule` factories (which masked positions commit and which
    clean ones are remasked, per step of a masked sampler)."""


@hookspec
def register_models(register):
    """Register denoiser network factories (``torch.nn.Module`` following the denoiser contract)."""


@hookspec
def register_datasets(register):
    """Register data-set factories."""


@hookspec
def register_tokenizers(register):
    """Register tokenizer factories."""


@hookspec
def register_kernels(register):
    """Register compute-kernel backends for the hot per-step operations."""


@hookspec
def register_commands(cli):
    """Add sub-commands to the ``ddkit`` command line: ``cli`` is its ``click.Group``."""


def hook_name(kind: str) -> str:
    """The hook that registers components of ``kind``: ``process`` -> ``register_processes``."""
    plural = kind + ("es" if kind.endswith("s") else "s")
    return f"register_{plural}"
