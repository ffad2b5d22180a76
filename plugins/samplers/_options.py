"""Parameters that every token-sampling sampler shares (temperature, top-k, top-p), the
kernel backend for samplers whose hot step runs through :mod:`ddkit.kernels`, and the time
grid of discrete-time samplers."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

import ddkit
import ddkit.kernels


class TokenSamplingParams(BaseModel):
    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)
    temperature: float = Field(1.0, ge=0.0, description="0 means argmax")
    top_k: int | None = Field(None, ge=1)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    parameterization: ddkit.Component("parameterization") = "mean"


class KernelSamplingParams(TokenSamplingParams):
    backend: str = Field("auto", description="kernel backend: auto, torch, numba or an installed one")

    @field_validator("backend")
    @classmethod
    def _installed(cls, name: str) -> str:
        return ddkit.kernels.check_backend_name(name)


class GridParams(BaseModel):
    """A discrete-time sampler: ``steps`` on a uniform or cosine grid (:func:`ddkit.time_grid`),
    reuse of a time-independent denoiser's output (``cache``), and an argmax last step."""

    model_config = ConfigDict(extra="forbid")
    steps: int = Field(128, ge=1)
    grid: Literal["uniform", "cosine"] = "uniform"
    cache: bool = True
    final_argmax: bool = False
