"""This replica's live routing state: loaded router versions and budget controllers.

Router versions are immutable, so their weights are cached by (router id, version). Each
router has one :class:`~device_sdk.budget.BudgetController` on this replica, started
from the version's calibrated threshold, moved to a newer version's threshold when one
is trained, and replaced when the budget or the window changes. With several replicas,
each holds the budget over the requests it sees (see the README's routing section).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from cloud.router.predictor import RouterModel
from device_sdk.budget import BudgetController

_MAX_MODELS = 16


@dataclass(frozen=True)
class ControllerKey:
    """What a controller holds the budget for: a router, its budget and its window."""

    router_id: int
    budget: float
    window: int


class RouterEngine:
    """Loaded models (LRU, at most 16) and one controller per router. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._models: OrderedDict[tuple[int, int], RouterModel] = OrderedDict()
        self._controllers: dict[int, tuple[ControllerKey, BudgetController, int]] = {}

    def model(self, router_id: int, version: int, load: Callable[[], bytes]) -> RouterModel:
        """The weights of ``version``, read with ``load`` on first use."""
        key = (router_id, version)
        with self._lock:
            model = self._models.get(key)
            if model is not None:
                self._models.move_to_end(key)
                return model
        model = RouterModel.from_bytes(load())
        with self._lock:
            self._models[key] = model
            while len(self._models) > _MAX_MODELS:
                self._models.popitem(last=False)
        return model

    def controller(self, key: ControllerKey, version: int, alpha: float) -> BudgetController:
        """The router's controller. A new budget or window starts a fresh one from
        ``alpha``; a newer trained ``version`` moves the threshold to its calibrated
        ``alpha`` but keeps the window, so the cap holds across the change. Requests pinned
        to an older version share the controller and change nothing."""
        with self._lock:
            current = self._controllers.get(key.router_id)
            if current is not None and current[0] == key:
                _, controller, latest = current
                if version > latest:
                    controller.reset_alpha(alpha)
                    self._controllers[key.router_id] = (key, controller, version)
                return controller
            controller = BudgetController(budget=key.budget, alpha=alpha, window=key.window)
            self._controllers[key.router_id] = (key, controller, version)
            return controller

    def live(self, router_id: int) -> BudgetController | None:
        """The router's current controller on this replica, if it routed anything yet."""
        with self._lock:
            current = self._controllers.get(router_id)
            return None if current is None else current[1]
