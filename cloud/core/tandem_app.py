"""The FastAPI application, with ASGI layers that run in front of its whole stack.

Starlette places every user middleware inside its own error middleware and FastAPI's
telemetry and body-limit layers, and each layer costs a few microseconds per request. The
fast paths for devices' hottest requests (``cloud/deploy/fast_path.py``,
``cloud/serving/fast_path.py``) answer in a fraction of a millisecond, so they run in
front of all of it, behind only the request-id and metrics layer; whatever they do not
answer goes through the full stack as before.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI
from starlette.types import ASGIApp, Receive, Scope, Send


class TandemApp(FastAPI):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._front_layers: list[tuple[Callable[..., ASGIApp], dict[str, Any]]] = []
        self._front: ASGIApp | None = None

    def add_front_layer(self, layer: Callable[..., ASGIApp], **options: Any) -> None:
        """Run ``layer(app, **options)`` in front of the whole stack. As with
        ``add_middleware``, the layer added last is the outermost."""
        if self._front is not None:
            raise RuntimeError("Front layers cannot be added once the app has started.")
        self._front_layers.append((layer, options))

    async def _stack(self, scope: Scope, receive: Receive, send: Send) -> None:
        await super().__call__(scope, receive, send)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self._front is None:
            app: ASGIApp = self._stack
            for layer, options in self._front_layers:
                app = layer(app, **options)
            self._front = app
        await self._front(scope, receive, send)
