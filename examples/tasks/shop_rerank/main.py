"""The `shop-rerank` task: orders a shop's products for the user holding the device.

``inputs`` is ``{"items": [{"id", "price", "rating"}, ...], "viewed": [ids]}``; the result
is ``{"ranking": [ids, best first], "scores": {id: score}}``. The score is a small linear
model: good ratings and items like the ones just viewed rank up, expensive ones down.
"""

from __future__ import annotations

from typing import Any

import numpy as np

WEIGHTS = np.array([1.0, -0.4, 2.0])  # rating, log price, viewed


def run(ctx: Any, inputs: dict[str, Any]) -> dict[str, Any]:
    items = inputs["items"]
    viewed = set(inputs.get("viewed", []))
    features = np.array(
        [
            [float(item["rating"]), np.log1p(float(item["price"])), float(item["id"] in viewed)]
            for item in items
        ]
    ).reshape(len(items), 3)
    scores = features @ WEIGHTS
    order = np.argsort(-scores, kind="stable")
    ranking = [items[i]["id"] for i in order]
    ctx.log.info("ranked %d items", len(items))
    return {
        "ranking": ranking,
        "scores": {items[i]["id"]: round(float(scores[i]), 4) for i in order},
    }
