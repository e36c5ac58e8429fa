"""Inference payloads in JSON. The route decodes bodies itself (``cloud.serving.codec``),
without pydantic on the hot path; these models document the JSON form in OpenAPI."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

Tensor = Any  # a number or a nested list of numbers, rectangular


class InferRequest(BaseModel):
    inputs: dict[str, Tensor] = Field(
        description="One entry per model input, named as in the model's signature; the first "
        'dimension is the batch (rows). Example: {"user_items": [[12, 7, 0]], "item": [[4]]}.'
    )


class InferResponse(BaseModel):
    name: str
    version: int = Field(description="The model version that answered.")
    outputs: dict[str, Tensor] = Field(
        description="One entry per model output, one row per input row."
    )
