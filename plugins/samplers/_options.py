"""Parameters that every token-sampling sampler shares (temperature, top-k, top-p)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

import ddkit


class TokenSamplingParams(BaseModel):
    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)
    temperature: float = Field(1.0, ge=0.0, description="0 means argmax")
    top_k: int | None = Field(None, ge=1)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    parameterization: ddkit.Component("parameterization") = "mean"
