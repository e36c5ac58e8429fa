"""Anonymous user embeddings: a distribution per user, learned on the device, and a fresh
draw from it for every cloud request or upload, so that no embedding names a user.

The published condition (Ding et al., "Personalized Language Model Learning on Text Data
Without User Identifiers", 2025, arXiv:2501.06062): the cloud cannot track users through
such embeddings when the users' distributions either lie in a shared linearly dependent
space (then the mixture of all users' embeddings cannot be decomposed into users: not
identifiable) or are close to each other (then an embedding cannot be accurately
attributed to the user it came from). This module applies both:

- **Shared low-rank space.** The user's statistics are a projection of their behaviour
  onto a basis shipped with the model (``basis``): the click rate, then the signed mean of
  the basis rows of the movies they rated. With a ``half_life`` (the shipped model's is 10
  ratings) these are means of *recent* behaviour, every rating weighted by
  ``2 ** (-age / half_life)``: observed as it happens, the statistics at a request are
  those of the behaviour up to that moment, which predicts the next click better than the
  user's all-time mean (on MovieLens, through the last minutes of behaviour above all) and
  moves with the user instead of staying one fixed point. Only
  the first ``rank`` statistics are used (``rank`` is 1 in the shipped model), each
  mapped through the population's quantiles onto its population rank in [-0.5, 0.5]. A
  bundle with a half-life ships the quantiles of recent statistics as
  ``quantiles_recent`` (an SDK that knows no half-life, finding no ``quantiles``, refuses
  it instead of mapping all-time statistics through them); one without, as
  ``quantiles``. Every user's distribution lives in the same ``rank``-dimensional space,
  far fewer dimensions than users.
- **Close to each other.** ``anonymity`` (``a``, in (0, 1]) shrinks the user's mean
  ``m`` toward the population centre and widens the spread: a draw is
  ``(1 - a) * m + a * u`` with ``u`` uniform on [-0.5, 0.5]^rank. Every user's density is
  then at most ``a ** -rank`` on the unit cube where all draws fall, so *any* attacker,
  even one who knows every user's distribution exactly, attributes a single embedding,
  judged on its own, to its user with probability at most ``a ** -rank / users``:
  ``attribution_bound``. With ``rank = 1``, the default ``a = 0.5`` allows at most twice
  random guessing. (With all-time statistics, one fixed point per user, k-means over all
  uploads exceeded that a little and the default was 0.55; with statistics of recent
  behaviour each user's draws spread over several boxes, and the benchmark's attackers
  stay under it on average, though a single set of uploads can exceed it.)
  ``a = 0`` is the static (linkable) embedding; ``a = 1`` carries nothing about the user.

The bound holds for every request on its own, whatever the statistics were at that
moment: a mixture of boxes of density at most ``a ** -rank`` has no higher density. It is
for one embedding at a time. Embeddings an attacker can group by other means
(one session, one network address, timing) are not covered: their average converges on the
user's mean. So draw once per cloud request and use that draw for all of its rows. See
the README's "Privacy: what is and is not guaranteed".
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from device_sdk._errors import DeviceSDKError

if TYPE_CHECKING:  # numpy loads on first use: `import device_sdk` stays light
    import numpy as np
    from numpy.typing import NDArray

PRIOR_CLICK = 0.5
PRIOR_WEIGHT = 5.0  # pseudo-ratings the click rate and the basis mean are shrunk with
DEFAULT_ANONYMITY = 0.5


class EmbeddingError(DeviceSDKError, ValueError):
    """The anonymous embedding cannot be built or drawn as asked; the message says why."""


class AnonymousEmbedding:
    """A user's embedding distribution, learned from their ratings, with fresh draws.

    ``basis`` [items, k] and ``quantiles`` [k + 1, q] come with the model (its ``.npz``;
    see :meth:`from_arrays`); ``rank`` statistics are used. :meth:`observe` learns from the
    user's behaviour (which movies they rated and whether each was a click), :meth:`draw`
    gives fresh embeddings; ``rng`` defaults to one seeded from the OS's entropy.
    """

    def __init__(
        self,
        basis: NDArray[np.float32],
        quantiles: NDArray[np.float32],
        *,
        rank: int,
        anonymity: float = DEFAULT_ANONYMITY,
        half_life: float | None = None,
        rng: np.random.Generator | None = None,
    ) -> None:
        import numpy as np

        if half_life is not None and not (half_life > 0.0 and math.isfinite(half_life)):
            raise EmbeddingError(
                f"half_life must be a finite number of ratings > 0 (or None for all-time "
                f"statistics), got {half_life}."
            )
        if not 0.0 <= anonymity <= 1.0:
            raise EmbeddingError(f"anonymity must be within [0, 1], got {anonymity}.")
        if basis.ndim != 2 or quantiles.ndim != 2 or quantiles.shape[0] != basis.shape[1] + 1:
            raise EmbeddingError(
                f"basis [items, k] and quantiles [k + 1, q] do not fit: {basis.shape} and "
                f"{quantiles.shape}; load both from the same model bundle."
            )
        if not 1 <= rank <= quantiles.shape[0]:
            raise EmbeddingError(f"rank must be within 1..{quantiles.shape[0]}, got {rank}.")
        self.basis = np.asarray(basis, np.float32)
        self.quantiles = np.asarray(quantiles, np.float32)
        self.rank = rank
        self.anonymity = float(anonymity)
        self.half_life = None if half_life is None else float(half_life)
        self._rng = rng if rng is not None else np.random.default_rng()
        self._seen = 0
        self._count = 0.0
        self._clicks = 0.0
        self._signed = np.zeros(basis.shape[1], np.float64)

    @classmethod
    def from_arrays(
        cls,
        arrays: Mapping[str, NDArray[Any]],
        *,
        anonymity: float = DEFAULT_ANONYMITY,
        rng: np.random.Generator | None = None,
    ) -> AnonymousEmbedding:
        """From a model bundle's arrays: ``basis``, ``rank``, and either ``half_life`` with
        ``quantiles_recent`` (statistics of recent behaviour) or ``quantiles`` (all-time
        statistics; a bundle of the first half-life models also ships its recent quantiles
        under this name, beside ``half_life``)."""
        quantiles = "quantiles_recent" if "quantiles_recent" in arrays else "quantiles"
        missing = [k for k in ("basis", quantiles, "rank") if k not in arrays]
        if quantiles == "quantiles_recent" and "half_life" not in arrays:
            missing.append("half_life")
        if missing:
            raise EmbeddingError(
                f"The model bundle lacks {missing}; build it with models.federated "
                "(BaseModel.write_bundle)."
            )
        return cls(
            arrays["basis"],
            arrays[quantiles],
            rank=int(arrays["rank"]),
            anonymity=anonymity,
            half_life=float(arrays["half_life"]) if "half_life" in arrays else None,
            rng=rng,
        )

    # --- learning from behaviour ----------------------------------------------------

    def observe(self, items: NDArray[np.int64], clicks: NDArray[Any]) -> None:
        """Learn from ratings, oldest first: the movies' indices (0 = unknown) and 1 / 0
        for click. Call it as behaviour happens, so that every :meth:`draw` reflects the
        behaviour up to that request."""
        import numpy as np

        items = np.asarray(items, np.int64).reshape(-1)
        clicks = np.asarray(clicks, np.float64).reshape(-1)
        if items.shape != clicks.shape:
            raise EmbeddingError(f"{len(items)} items but {len(clicks)} clicks.")
        if len(items) and (items.min() < 0 or items.max() >= len(self.basis)):
            raise EmbeddingError(f"item indices must be within 0..{len(self.basis) - 1}.")
        # Weights of the new ratings (the last one 1) and of what came before.
        if self.half_life is None:
            weights, before = np.ones(len(items)), 1.0
        else:
            ages = np.arange(len(items) - 1, -1, -1, dtype=np.float64)
            weights, before = 0.5 ** (ages / self.half_life), 0.5 ** (len(items) / self.half_life)
        self._seen += len(items)
        self._count = before * self._count + float(weights.sum())
        self._clicks = before * self._clicks + float(weights @ clicks)
        signed = (2.0 * clicks - 1.0) * weights
        self._signed = before * self._signed + (signed[:, None] * self.basis[items]).sum(axis=0)

    def observe_each(self, items: NDArray[np.int64], clicks: NDArray[Any]) -> NDArray[np.float32]:
        """Learn from ratings one at a time, oldest first, as :meth:`observe` does, and
        return the exact position [n, rank] *before* each: what a request just before that
        rating was drawn around. Local training gives each example a draw around its own
        position (``LocalExamples.user``), as the cloud saw it.

        It learns, as :meth:`observe` does: observe each rating exactly once, through
        either method, never both (a rating observed twice counts twice). The positions are
        exact and linkable, as :meth:`mean` is: keep them on the device and send only
        draws around them (:meth:`draw_around`)."""
        import numpy as np

        items = np.asarray(items, np.int64).reshape(-1)
        clicks = np.asarray(clicks, np.float64).reshape(-1)
        if items.shape != clicks.shape:
            raise EmbeddingError(f"{len(items)} items but {len(clicks)} clicks.")
        out = np.empty((len(items), self.rank), np.float32)
        for i in range(len(items)):
            out[i] = self.mean()
            self.observe(items[i : i + 1], clicks[i : i + 1])
        return out

    def save(self, path: Path) -> None:
        """Keep what was learned (three running sums and how many ratings they hold;
        never the ratings themselves) in an ``.npz``, written under a scratch name and
        renamed into place."""
        import numpy as np

        scratch = path.with_name(path.name + ".partial.npz")
        half_life = np.nan if self.half_life is None else self.half_life
        np.savez(
            scratch,
            count=self._count,
            clicks=self._clicks,
            signed=self._signed,
            seen=self._seen,
            half_life=half_life,
        )
        scratch.replace(path)

    def restore(self, path: Path) -> None:
        """Take back what :meth:`save` kept (e.g. after the app restarted).

        Sums saved with all-time statistics (no half-life, including a file from an SDK
        before half-lives, which has neither ``half_life`` nor ``seen``) are taken by an
        embedding with a half-life ``h`` as a starting point: when they hold more weight
        than a long history does under the decay, ``sum(2 ** (-k / h))`` over ``k >= 0``
        (about 14.9 ratings for ``h = 10``), all three sums are scaled down to that weight,
        keeping the user's all-time means; newer ratings then move them as usual. Sums
        saved with a half-life are refused by an embedding with another one or with none.
        """
        import numpy as np

        with np.load(path) as data:
            signed = np.asarray(data["signed"], np.float64)
            if signed.shape != self._signed.shape:
                raise EmbeddingError(
                    f"{path} was saved for a basis of {len(signed)} directions; this model's "
                    f"has {len(self._signed)}. Start learning afresh for the new model."
                )
            saved = float(data["half_life"]) if "half_life" in data.files else math.nan
            saved_life = None if math.isnan(saved) else saved
            count, clicks = float(data["count"]), float(data["clicks"])
            seen = int(data["seen"]) if "seen" in data.files else round(count)
        if saved_life != self.half_life and saved_life is not None:
            raise EmbeddingError(
                f"{path} was saved with {_decay_name(saved_life)}; this model uses "
                f"{_decay_name(self.half_life)}. Start learning afresh for the new model."
            )
        if saved_life is None and self.half_life is not None:
            stationary = 1.0 / (1.0 - 0.5 ** (1.0 / self.half_life))
            if count > stationary:
                scale = stationary / count
                count, clicks, signed = stationary, clicks * scale, signed * scale
        self._count, self._clicks, self._signed, self._seen = count, clicks, signed, seen

    @property
    def observed(self) -> int:
        """How many ratings the distribution was learned from."""
        return self._seen

    def statistics(self) -> NDArray[np.float32]:
        """The user's statistics [k + 1]: shrunk click rate, then the signed basis mean
        (weighted toward recent ratings when there is a ``half_life``)."""
        import numpy as np

        shrunk = self._count + PRIOR_WEIGHT
        rate = (self._clicks + PRIOR_CLICK * PRIOR_WEIGHT) / shrunk
        return np.concatenate([[rate], self._signed / shrunk]).astype(np.float32)

    def mean(self) -> NDArray[np.float32]:
        """The user's exact position now [rank]: population ranks in [-0.5, 0.5]. This is
        the exact (linkable) embedding; it never leaves the device."""
        import numpy as np

        stats = self.statistics()
        grid = np.linspace(0.0, 1.0, self.quantiles.shape[1])
        ranks = [np.interp(stats[j], self.quantiles[j], grid) - 0.5 for j in range(self.rank)]
        return np.asarray(ranks, np.float32)

    # --- drawing --------------------------------------------------------------------

    def draw(self, n: int = 1) -> NDArray[np.float32]:
        """``n`` fresh embeddings [n, rank]: ``(1 - a) * mean + a * u``, ``u`` uniform on
        [-0.5, 0.5]^rank, independently for every row and every call."""
        import numpy as np

        if n < 0:
            raise EmbeddingError(f"n must be >= 0, got {n}.")
        return self.draw_around(np.repeat(self.mean()[None, :], n, axis=0))

    def draw_around(self, positions: NDArray[np.float32]) -> NDArray[np.float32]:
        """One fresh embedding per row of ``positions`` [n, rank] (exact positions, e.g.
        from :meth:`observe_each`): ``(1 - a) * position + a * u``. The attribution bound
        holds for each draw whatever its position. Positions must be finite and within
        [-0.5, 0.5]; others raise :class:`EmbeddingError`."""
        import numpy as np

        positions = np.asarray(positions, np.float32)
        if positions.ndim != 2 or positions.shape[1] != self.rank:
            raise EmbeddingError(
                f"positions must be [n, {self.rank}], got {list(positions.shape)}."
            )
        if not np.isfinite(positions).all():
            raise EmbeddingError(
                "positions hold a non-finite value; give the positions from observe_each()."
            )
        if np.abs(positions).max(initial=0.0) > 0.5:
            raise EmbeddingError("positions are population ranks within [-0.5, 0.5].")
        noise = self._rng.random(positions.shape) - 0.5
        a = self.anonymity
        out: NDArray[np.float32] = ((1.0 - a) * positions + a * noise).astype(np.float32)
        return out

    def attribution_bound(self, users: int) -> float:
        """The most any attacker's chance can be of naming the user of one embedding,
        among ``users`` users: ``min(1, a ** -rank / users)`` (1 when ``a`` is 0)."""
        if users < 1:
            raise EmbeddingError(f"users must be >= 1, got {users}.")
        if self.anonymity == 0.0:
            return 1.0
        return float(min(1.0, self.anonymity**-self.rank / users))


def _decay_name(half_life: float | None) -> str:
    return "all-time statistics" if half_life is None else f"half_life {half_life:g} ratings"
