"""Exceptions raised by ddkit. Every one derives from :class:`DDKitError`."""

from __future__ import annotations


class DDKitError(Exception):
    """Base class of every error ddkit raises on purpose."""


class PluginError(DDKitError):
    """A plugin could not be loaded or is inconsistent (strict mode turns warnings into this)."""


class PluginValidationError(PluginError):
    """A plugin implements a hook that no specification declares, or with wrong arguments."""


class DuplicateComponentError(PluginError):
    """Two plugins registered a component of the same kind under the same name."""


class UnknownComponentError(DDKitError, LookupError):
    """No component of that kind and name is installed."""


class ParameterError(DDKitError, ValueError):
    """A component's parameters failed validation against its parameter model."""


class NumericalError(DDKitError, ValueError):
    """A computation produced values it cannot go on with while sampling, training or
    evaluating: NaN or infinite logits, probabilities or losses. A fault of the model or of
    the numbers it was given at run time, not of the configuration (the command line exits
    with status 3, not 2)."""


class DenoiserOutputError(NumericalError):
    """A denoiser returned an output of the wrong shape. Like a NaN it is found only when the
    network runs, so it is a :class:`NumericalError` and shares its exit status."""


class PluginWarning(UserWarning):
    """A plugin failed to load or register; everything else keeps working."""
