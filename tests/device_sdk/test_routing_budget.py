"""The budget controller: the cloud share stays within budget in every window, and the
threshold follows the traffic to the budget quantile."""

from __future__ import annotations

import random

import pytest

from device_sdk.budget import BudgetController


def max_window_share(cloud: list[bool], window: int) -> float:
    counts = [sum(cloud[i : i + window]) for i in range(len(cloud) - window + 1)]
    return max(counts) / window


@pytest.mark.parametrize(
    "stream",
    [
        [0.0] * 3000,  # every request wants the cloud
        [0.0, 1.0] * 1500,  # half of them do, alternating
        [0.0] * 500 + [1.0] * 1000 + [0.0] * 1500,  # bursts
        [random.Random(3).random() ** 4 for _ in range(3000)],  # noqa: S311  # test data  # skewed low
    ],
    ids=["all-hard", "alternating", "bursts", "skewed"],
)
def test_no_window_exceeds_the_budget(stream: list[float]) -> None:
    """Whatever the PRS stream, no 200 consecutive decisions hold more than 30 % cloud."""
    controller = BudgetController(budget=0.3, alpha=0.9, window=200)
    cloud = [controller.decide(prs).cloud for prs in stream]
    assert max_window_share(cloud, 200) <= 0.3


def test_threshold_tracks_the_budget_quantile() -> None:
    """On uniform PRS the threshold settles near the target quantile, whatever its start."""
    rng = random.Random(0)  # noqa: S311  # test data, not secrets
    controller = BudgetController(budget=0.3, alpha=0.95, window=500, margin=0.0)
    decisions = [controller.decide(rng.random()) for _ in range(20_000)]
    assert controller.alpha == pytest.approx(0.3, abs=0.05)
    late = decisions[-5000:]
    assert sum(d.cloud for d in late) / len(late) == pytest.approx(0.3, abs=0.03)


def test_threshold_follows_drift() -> None:
    """When the traffic gets harder (lower PRS), the threshold moves down with it."""
    rng = random.Random(1)  # noqa: S311  # test data, not secrets
    controller = BudgetController(budget=0.2, alpha=0.2, window=500)
    for _ in range(10_000):
        controller.decide(rng.random())
    before = controller.alpha
    for _ in range(20_000):
        controller.decide(rng.random() * 0.5)
    assert controller.alpha < before
    assert controller.alpha == pytest.approx(0.5 * 0.18, abs=0.04)


def test_capped_requests_say_so() -> None:
    """A request under the threshold that the window cap keeps on the edge is `capped`."""
    controller = BudgetController(budget=0.1, alpha=1.0, window=10)
    decisions = [controller.decide(0.0) for _ in range(3)]
    assert [d.cloud for d in decisions] == [True, False, False]
    assert [d.capped for d in decisions] == [False, True, True]


def test_observed_decisions_fill_the_window() -> None:
    """Decisions taken elsewhere (a device's) count against the cap here too."""
    controller = BudgetController(budget=0.1, alpha=1.0, window=10)
    controller.observe(cloud=True, prs=0.0)
    assert controller.decide(0.0).capped


def test_zero_budget_never_calls_the_cloud() -> None:
    """Budget 0 keeps every request on the edge."""
    controller = BudgetController(budget=0.0, alpha=1.0, window=10)
    assert not any(controller.decide(0.0).cloud for _ in range(50))


def test_share_reports_the_recent_cloud_share() -> None:
    """share() is the cloud share over the last window - 1 decisions."""
    controller = BudgetController(budget=0.5, alpha=0.5, window=5, step=0.0)
    for prs in (0.0, 1.0, 0.0, 1.0):
        controller.decide(prs)
    assert controller.share() == 0.5


def test_reset_alpha_adopts_a_published_threshold() -> None:
    """reset_alpha moves the threshold; the window is kept."""
    controller = BudgetController(budget=0.5, alpha=0.5, window=5, step=0.0)
    controller.reset_alpha(0.1)
    assert controller.alpha == 0.1
    with pytest.raises(ValueError, match="finite"):
        controller.reset_alpha(float("nan"))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"budget": -0.1, "alpha": 0.5},
        {"budget": 1.1, "alpha": 0.5},
        {"budget": float("nan"), "alpha": 0.5},
        {"budget": 0.3, "alpha": float("inf")},
        {"budget": 0.3, "alpha": 0.5, "window": 0},
    ],
)
def test_bad_settings_are_refused(kwargs: dict[str, float]) -> None:
    """A budget outside [0, 1], a non-finite threshold or an empty window raise ValueError."""
    with pytest.raises(ValueError, match=r"must"):
        BudgetController(**kwargs)  # type: ignore[arg-type]
