"""Anonymous user embeddings: learned from behaviour, drawn fresh, bounded attribution."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from device_sdk import AnonymousEmbedding, EmbeddingError
from tests.device_sdk.federation_factories import bundle_arrays, embedding


def test_every_draw_is_fresh() -> None:
    """Two calls of draw() give different embeddings for the same user."""
    user = embedding()
    user.observe(np.arange(1, 11), np.ones(10))
    assert not np.array_equal(user.draw(1), user.draw(1))


def test_draws_stay_in_the_users_box() -> None:
    """Every draw lies within a / 2 of (1 - a) times the user's mean."""
    user = embedding(anonymity=0.4)
    user.observe(np.arange(1, 21), np.ones(20))
    draws = user.draw(2000)
    centre = 0.6 * user.mean()
    assert np.all(np.abs(draws - centre) <= 0.2 + 1e-6)


def test_anonymity_shrinks_draws_toward_the_population() -> None:
    """A higher setting pulls the draws' average toward the population centre (0)."""
    averages = []
    for anonymity in (0.2, 0.5, 0.8):
        user = embedding(anonymity=anonymity)
        user.observe(np.arange(1, 21), np.ones(20))
        averages.append(abs(float(user.draw(20_000).mean())))
    assert averages[0] > averages[1] > averages[2]


def test_zero_anonymity_is_the_static_embedding() -> None:
    """At anonymity 0 every draw equals the user's mean: linkable, as a static id is."""
    user = embedding(anonymity=0.0)
    user.observe(np.arange(1, 6), np.array([1, 0, 1, 1, 0]))
    assert np.allclose(user.draw(5), user.mean())


def test_the_distribution_is_learned_from_behaviour() -> None:
    """A user who clicks everything ranks above one who clicks nothing."""
    fan, critic = embedding(), embedding()
    fan.observe(np.arange(1, 21), np.ones(20))
    critic.observe(np.arange(1, 21), np.zeros(20))
    assert fan.mean()[0] > 0 > critic.mean()[0]
    assert fan.observed == 20


def test_attribution_bound_is_inverse_anonymity_over_users() -> None:
    """With rank 1, no attacker names the user of an embedding with more than 1 / (a N)."""
    assert embedding(anonymity=0.5).attribution_bound(100) == pytest.approx(0.02)
    assert embedding(anonymity=0.0).attribution_bound(100) == 1.0


def test_setting_outside_zero_one_is_refused() -> None:
    """anonymity outside [0, 1] raises EmbeddingError naming the range."""
    with pytest.raises(EmbeddingError, match=r"\[0, 1\]"):
        embedding(anonymity=1.5)


def test_unknown_items_are_refused() -> None:
    """observe() refuses item indices outside the shipped basis."""
    with pytest.raises(EmbeddingError, match="within"):
        embedding().observe(np.array([999]), np.array([1]))


def test_learned_distribution_survives_a_restart(tmp_path: Path) -> None:
    """save() then restore() into a fresh embedding gives the same mean."""
    user = embedding()
    user.observe(np.arange(1, 11), np.array([1, 1, 0, 1, 1, 1, 0, 1, 1, 1]))
    user.save(tmp_path / "me.npz")
    again = embedding()
    again.restore(tmp_path / "me.npz")
    assert np.array_equal(again.mean(), user.mean()) and again.observed == 10


def _recent(half_life: float = 10.0) -> AnonymousEmbedding:
    return AnonymousEmbedding.from_arrays(bundle_arrays() | {"half_life": np.asarray(half_life)})


def test_bundle_half_life_weights_recent_behaviour() -> None:
    """With the bundle's half-life, a user who stopped clicking ranks below one who started,
    though both clicked half of the same 40 movies; without one they rank equal."""
    items = np.arange(1, 41) % 29 + 1
    early, late = np.repeat([1.0, 0.0], 20), np.repeat([0.0, 1.0], 20)
    cooled, warmed = _recent(), _recent()
    cooled.observe(items, early)
    warmed.observe(items, late)
    assert cooled.half_life == 10.0 and cooled.observed == 40
    assert cooled.mean()[0] < 0 < warmed.mean()[0]
    flat_cooled, flat_warmed = embedding(), embedding()
    flat_cooled.observe(items, early)
    flat_warmed.observe(items, late)
    assert flat_cooled.half_life is None
    assert flat_cooled.statistics()[0] == pytest.approx(flat_warmed.statistics()[0])


def test_observing_one_at_a_time_equals_one_batch() -> None:
    """The decayed sums do not depend on how the behaviour was split into observe() calls."""
    items, clicks = np.arange(1, 16), (np.arange(15) % 3 == 0).astype(np.float32)
    batch, stream = _recent(4.0), _recent(4.0)
    batch.observe(items, clicks)
    for i in range(len(items)):
        stream.observe(items[i : i + 1], clicks[i : i + 1])
    assert np.allclose(batch.statistics(), stream.statistics(), atol=1e-9)


def test_restore_refuses_another_half_life(tmp_path: Path) -> None:
    """Sums saved with one half-life are refused by an embedding with another."""
    user = _recent(10.0)
    user.observe(np.arange(1, 6), np.ones(5))
    user.save(tmp_path / "me.npz")
    with pytest.raises(EmbeddingError, match="half_life"):
        embedding().restore(tmp_path / "me.npz")


def test_restore_refusal_names_all_time_statistics(tmp_path: Path) -> None:
    """Refusing a half-life state, an all-time embedding says "all-time statistics"."""
    user = _recent(10.0)
    user.observe(np.arange(1, 6), np.ones(5))
    user.save(tmp_path / "me.npz")
    with pytest.raises(EmbeddingError, match="half_life 10 ratings") as refused:
        embedding().restore(tmp_path / "me.npz")
    assert "this model uses all-time statistics" in str(refused.value)
    assert "nan" not in str(refused.value)


def _legacy_state(path: Path, count: float, clicks: float, signed: list[float]) -> None:
    """A state as an SDK before half-lives saved it: no ``half_life``, no ``seen``."""
    np.savez(path, count=count, clicks=clicks, signed=np.asarray(signed, np.float64))


def test_restore_scales_a_legacy_all_time_state_to_the_decays_weight(tmp_path: Path) -> None:
    """A legacy all-time state of 100 ratings restores into a half-life embedding with its
    means kept and its weight cut to sum(2 ** (-k / 10)), k >= 0 (about 14.9 ratings)."""
    _legacy_state(tmp_path / "old.npz", 100.0, 80.0, [20.0, -10.0, 5.0])
    user = _recent(10.0)
    user.restore(tmp_path / "old.npz")
    weight = 1.0 / (1.0 - 0.5**0.1)
    assert user.observed == 100
    sums = np.array([0.8 * weight + 2.5, 0.2 * weight, -0.1 * weight, 0.05 * weight])
    expected = sums / (weight + 5.0)  # 5 pseudo-ratings; the click rate's prior is 0.5
    assert np.allclose(user.statistics(), expected, atol=1e-6)


def test_restore_keeps_a_short_legacy_state_as_it_is(tmp_path: Path) -> None:
    """A legacy state lighter than the decay's weight (4 ratings) is restored unscaled."""
    _legacy_state(tmp_path / "old.npz", 4.0, 3.0, [1.0, 0.0, -1.0])
    user, flat = _recent(10.0), embedding()
    user.restore(tmp_path / "old.npz")
    flat.restore(tmp_path / "old.npz")
    assert user.observed == 4 == flat.observed
    assert np.allclose(user.statistics(), flat.statistics())


def test_non_positive_half_life_is_refused() -> None:
    """half_life must be a positive number of ratings."""
    with pytest.raises(EmbeddingError, match="half_life"):
        _recent(0.0)


@pytest.mark.parametrize("half_life", [float("inf"), float("nan")])
def test_non_finite_half_life_is_refused(half_life: float) -> None:
    """half_life must be finite; None, not infinity, asks for all-time statistics."""
    with pytest.raises(EmbeddingError, match="finite"):
        _recent(half_life)


def test_bundle_quantiles_recent_go_with_its_half_life() -> None:
    """A bundle's ``quantiles_recent`` are used over ``quantiles``, and it loads without
    ``quantiles`` (which an SDK before half-lives needs, and so refuses it)."""
    arrays = bundle_arrays()
    recent = arrays.pop("quantiles") + np.float32(1.0)
    user = AnonymousEmbedding.from_arrays(
        arrays | {"quantiles_recent": recent, "half_life": np.asarray(10.0)}
    )
    assert np.array_equal(user.quantiles, recent) and user.half_life == 10.0


def test_bundle_quantiles_recent_without_a_half_life_are_refused() -> None:
    """``quantiles_recent`` with no ``half_life`` is a broken bundle, named as such."""
    arrays = bundle_arrays()
    arrays["quantiles_recent"] = arrays.pop("quantiles")
    with pytest.raises(EmbeddingError, match="half_life"):
        AnonymousEmbedding.from_arrays(arrays)


def test_observe_each_gives_the_position_before_every_rating() -> None:
    """observe_each() returns the mean before each rating and learns what observe() does."""
    items, clicks = np.arange(1, 9), np.array([1, 1, 0, 1, 0, 0, 1, 1], np.float32)
    each, whole = _recent(3.0), _recent(3.0)
    positions = each.observe_each(items, clicks)
    whole.observe(items, clicks)
    first = _recent(3.0)
    first.observe(items[:4], clicks[:4])
    assert positions.shape == (8, 1) and positions[0, 0] == pytest.approx(0.0, abs=0.06)
    assert np.allclose(positions[4], first.mean())
    assert np.allclose(each.mean(), whole.mean()) and each.observed == 8


def test_draw_around_keeps_each_draw_in_its_positions_box() -> None:
    """draw_around() draws one embedding per position, within a / 2 of (1 - a) * it."""
    user = embedding(anonymity=0.4)
    positions = np.repeat(np.array([[-0.5], [0.0], [0.5]], np.float32), 500, axis=0)
    draws = user.draw_around(positions)
    assert draws.shape == (1500, 1)
    assert np.all(np.abs(draws - 0.6 * positions) <= 0.2 + 1e-6)
    with pytest.raises(EmbeddingError, match=r"\[n, 1\]"):
        user.draw_around(np.zeros((3, 2), np.float32))


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_draw_around_refuses_non_finite_positions(bad: float) -> None:
    """A NaN or infinite position is refused, not turned into a NaN embedding."""
    with pytest.raises(EmbeddingError, match="non-finite"):
        embedding().draw_around(np.array([[0.1], [bad]], np.float32))
