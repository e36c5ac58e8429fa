"""The `hello` task: echoes what the app passed to `Device.predict("hello", inputs)`."""

from __future__ import annotations


def run(ctx: object, inputs: object) -> dict[str, object]:
    return {"echo": inputs}
