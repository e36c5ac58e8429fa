"""Key tokens: per metric, the request's terms that pushed the prediction hardest.

They let an operator see why a request went to the cloud: a term with a negative push
lowered the probability that the edge is as good on that metric.
"""

from __future__ import annotations

from cloud.router.predictor import RouterModel
from cloud.router.schemas import KeyTokenOut
from device_sdk.text_features import HashedText


def key_tokens(
    model: RouterModel, text: str, hashed: HashedText, metrics: list[str], k: int
) -> dict[str, list[KeyTokenOut]]:
    """For each metric (by name), up to ``k`` terms of ``text``, hardest push first."""
    if k == 0:
        return {name: [] for name in metrics}
    return {
        name: [
            KeyTokenOut(token=t.token, push=round(t.push, 6))
            for t in model.key_tokens(text, hashed, i, k)
        ]
        for i, name in enumerate(metrics)
    }
