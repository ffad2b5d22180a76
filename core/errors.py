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
    """A component's parameters failed validation against its parameter model.

    ``kind`` and ``name`` say which component, ``params`` is its parameter model and
    ``errors`` pydantic's errors, so that a config can report each one at its dotted path
    (:func:`ddkit.config.format_validation_error`)."""

    def __init__(self, message: str, *, kind: str | None = None, name: str | None = None,
                 params: type | None = None, errors: Exception | None = None):
        super().__init__(message)
        self.kind, self.name, self.params, self.errors = kind, name, params, errors


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
