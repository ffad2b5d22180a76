"""ddkit: a framework for discrete diffusion models.

The core defines the protocols (:class:`Schedule`, :class:`Process`,
:class:`Parameterization`, :class:`Loss`, :class:`Sampler`, the denoiser contract) and the
plugin system; built-in and third-party plugins implement them::

    import torch, ddkit

    process = ddkit.build("process", "masked", vocab_size=4, schedule="cosine")
    sampler = ddkit.build("sampler", "ancestral", steps=16)
    uniform = lambda x_t, t: torch.zeros(*x_t.shape, 4)  # a plain-function denoiser
    result = sampler.sample(uniform, process, num_samples=2, length=8,
                            generator=torch.Generator().manual_seed(0))
    result.tokens, result.nfe
"""

from . import guidance
from .denoiser import Denoiser
from .errors import (
    DDKitError,
    DenoiserOutputError,
    DuplicateComponentError,
    NumericalError,
    ParameterError,
    PluginError,
    PluginValidationError,
    PluginWarning,
    UnknownComponentError,
)
from .hookspecs import KINDS, hookimpl
from .loss import (ContinuousTimeLoss, ContinuousTimeLossParams, GlobalBatchSlice, Loss, LossOutput, global_batch_slice,
                   sample_steps, sample_times)
from .parameterization import Parameterization
from .params import params_model
from .process import Process
from .registry import (
    Component,
    ComponentRecord,
    NoParams,
    Registry,
    build,
    get_registry,
    list_components,
    reset_registry,
)
from .sampler import (
    Corrector,
    DenoiserCalls,
    GridSampler,
    SampleResult,
    Sampler,
    SamplerState,
    TokenSampler,
    TransitionSampler,
    UnmaskingRule,
    time_grid,
)
from .schedule import Schedule

__version__ = "0.1.0"

__all__ = [
    "KINDS",
    "Component",
    "Corrector",
    "ComponentRecord",
    "ContinuousTimeLoss",
    "ContinuousTimeLossParams",
    "DDKitError",
    "Denoiser",
    "DenoiserCalls",
    "DenoiserOutputError",
    "DuplicateComponentError",
    "GlobalBatchSlice",
    "GridSampler",
    "Loss",
    "LossOutput",
    "NoParams",
    "NumericalError",
    "ParameterError",
    "Parameterization",
    "PluginError",
    "PluginValidationError",
    "PluginWarning",
    "Process",
    "Registry",
    "SampleResult",
    "Sampler",
    "SamplerState",
    "Schedule",
    "TokenSampler",
    "TransitionSampler",
    "UnknownComponentError",
    "UnmaskingRule",
    "build",
    "guidance",
    "get_registry",
    "global_batch_slice",
    "hookimpl",
    "list_components",
    "params_model",
    "reset_registry",
    "sample_steps",
    "sample_times",
    "time_grid",
]
