"""The `movielens-coda` task: one CoDA round for the user holding the device.

The cloud deploys it with the edge model's frozen backbone (`backbone.onnx`, written by
`tandem coda split-edge`) and runs it daily (`trigger: schedule`); an app may also call it
with `Device.predict("movielens-coda", {})` when new ratings arrive, and it then trains
only once enough new local samples came in. The app registers, at start-up, the learner
that holds its local ratings, its connection to the cloud and the head's file:

    register_learner("movielens-coda", CodaLearner(pool="movielens", ...))

The result (trained or not, kept or not, samples retrieved and kept) is emitted as the
output `coda`.
"""

from __future__ import annotations

from typing import Any

from device_sdk import learner_for


def run(ctx: Any, inputs: Any) -> dict[str, Any]:
    learner = learner_for(ctx.task)
    summary = learner.step(ctx.model("backbone"), ctx.trigger)
    ctx.emit("coda", summary)
    ctx.log.info("coda round: %s", summary)
    return summary
