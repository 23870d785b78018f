"""Request bodies of the HTTP API (pydantic: a wrong field becomes a 422 that names it)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Format = Literal["png", "npy", "json"]


class GenerateRequest(BaseModel):
    # strict: "3" is not a number of images; unknown fields are typos, not options
    model_config = ConfigDict(extra="forbid", strict=True, populate_by_name=True)

    n: int = Field(1, ge=1, description="number of images (at most the server's max_n)")
    seed: int | None = Field(
        None, ge=0, le=2**63 - 1, description="noise seed; random (and returned) if omitted"
    )
    class_label: int | None = Field(None, alias="class", ge=0, description="class index (conditional models)")
    steps: int | None = Field(None, ge=1, description="sampler steps (diffusion models)")
    guidance: float | None = Field(
        None, ge=0, description="classifier-free guidance scale (conditional diffusion)"
    )
    format: Format = Field(
        "png", description="png: one grid image; json: base64 PNG per image; npy: uint8 NHWC"
    )


class RestoreJSON(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    images: list[str] = Field(..., min_length=1, description="base64-encoded PNG images")
    format: Format = "png"
