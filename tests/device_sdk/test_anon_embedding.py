"""Anonymous user embeddings: learned from behaviour, drawn fresh, bounded attribution."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from device_sdk import EmbeddingError
from tests.device_sdk.federation_factories import embedding


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
