"""``tandem coda load-movielens``: fill a pool with anonymous MovieLens samples.

Every rating before the models' time cut becomes a sample: the edge model's inputs as
features (the movie, the 20 movies rated before it, its genres), click (>= 4 stars) as the
label, and the edge backbone's item/user embedding. No user id is sent. Samples go through
the same admin API as any other ingestion, in batches, so the cloud validates them all.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Protocol

import numpy as np
import typer

from cloud.models_cli import DEFAULT_URL, Token, Url

coda_app = typer.Typer(help="CoDA sample pools.", no_args_is_help=True)
BATCH = 2000


class _Response(Protocol):
    status_code: int

    @property
    def text(self) -> str: ...


class PoolClient(Protocol):
    """``httpx.Client`` (or a test client) with the cloud's base URL."""

    def post(self, url: str, *, headers: Mapping[str, str], json: Any) -> _Response: ...


class LoadError(Exception):
    """The cloud refused the pool or a batch; the message says which and why."""


def load_movielens(
    client: PoolClient,
    token: str,
    data_dir: Path,
    edge_onnx: bytes,
    *,
    pool: str = "movielens",
    limit: int | None = None,
    seed: int = 0,
) -> int:
    """Create ``pool`` (if new) and ingest MovieLens's pre-cut ratings; return how many.

    ``limit`` keeps a uniform random subset of that many samples."""
    from models import coda_pool
    from models.coda_split import split_edge

    samples = coda_pool.load(data_dir).pool
    if limit is not None and limit < len(samples):
        rows = np.sort(np.random.default_rng(seed).choice(len(samples), limit, replace=False))
        samples = samples.take(rows)
    embeddings = coda_pool.embed(split_edge(edge_onnx).backbone, samples)
    headers = {"Authorization": f"Bearer {token}"}
    created = client.post(
        "/v1/coda/pools",
        headers=headers,
        json={
            "name": pool,
            "dim": int(embeddings.shape[1]),
            "description": "MovieLens ratings before the time cut (tandem coda load-movielens)",
        },
    )
    if created.status_code not in (201, 409):
        raise LoadError(f"the cloud refused pool {pool!r}: {created.status_code} {created.text}")
    for start in range(0, len(samples), BATCH):
        stop = min(start + BATCH, len(samples))
        batch = [
            {
                "features": samples.features(i),
                "label": float(samples.label[i]),
                "embedding": [float(v) for v in embeddings[i]],
            }
            for i in range(start, stop)
        ]
        response = client.post(
            f"/v1/coda/pools/{pool}/samples", headers=headers, json={"samples": batch}
        )
        if response.status_code != 201:
            raise LoadError(
                f"the cloud refused samples {start}-{stop - 1}: "
                f"{response.status_code} {response.text[:500]}"
            )
    return len(samples)


@coda_app.command("load-movielens")
def load_command(
    data: Annotated[Path, typer.Option("--data", help="A MovieLens directory.")],
    models_dir: Annotated[
        Path, typer.Option("--models", help="A directory written by `tandem models build`.")
    ],
    pool: Annotated[str, typer.Option("--pool", help="The pool to create or add to.")] = (
        "movielens"
    ),
    limit: Annotated[
        int | None, typer.Option("--limit", min=1, help="Ingest a random subset of this size.")
    ] = None,
    url: Url = DEFAULT_URL,
    token: Token = None,
) -> None:
    """Fill a CoDA pool with MovieLens samples embedded by the edge model's backbone."""
    import httpx

    from models.errors import ModelsError

    if not token:
        typer.echo("error: loading a pool needs an admin key: pass --token or set TANDEM_TOKEN.")
        raise typer.Exit(2)
    edge = models_dir / "edge.onnx"
    if not edge.is_file():
        typer.echo(f"error: {edge} does not exist; run `tandem models build` first.", err=True)
        raise typer.Exit(2)
    try:
        with httpx.Client(base_url=url.rstrip("/"), timeout=120.0) as client:
            count = load_movielens(client, token, data, edge.read_bytes(), pool=pool, limit=limit)
    except httpx.HTTPError as exc:
        typer.echo(f"error: cannot reach {url}: {exc}. Is the cloud running?", err=True)
        raise typer.Exit(1) from exc
    except (LoadError, ModelsError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    typer.echo(f"pool {pool!r}: {count} samples ingested; the index builds in the background.")


@coda_app.command("split-edge")
def split_command(
    models_dir: Annotated[
        Path, typer.Option("--models", help="A directory written by `tandem models build`.")
    ],
    out: Annotated[Path, typer.Option("--out", help="Where to write backbone.onnx, head.npz.")],
) -> None:
    """Split the edge model into a frozen backbone (ONNX) and a trainable head (.npz)."""
    from models.coda_split import split_edge
    from models.errors import ModelsError

    edge = models_dir / "edge.onnx"
    if not edge.is_file():
        typer.echo(f"error: {edge} does not exist; run `tandem models build` first.", err=True)
        raise typer.Exit(2)
    try:
        backbone, head = split_edge(edge.read_bytes()).write(out)
    except (ModelsError, OSError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    typer.echo(f"wrote {backbone} and {head}")
