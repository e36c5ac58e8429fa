"""``tandem models``: build the edge and cloud recommendation models, and register them in
the cloud's model registry."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Protocol

import typer

models_app = typer.Typer(
    help="Recommendation models: train, export to ONNX, register.", no_args_is_help=True
)

# The registry takes descriptions up to this length.
_DESCRIPTION_LIMIT = 500
_PUSH_ORDER = ("edge", "edge_int8", "cloud")

Url = Annotated[str, typer.Option("--url", envvar="TANDEM_URL", help="The cloud's base URL.")]
Token = Annotated[
    str | None,
    typer.Option("--token", "--admin-token", envvar="TANDEM_TOKEN", help="An admin key."),
]
Prefix = Annotated[
    str,
    typer.Option(
        "--prefix",
        help="Registry names are PREFIX + edge, edge-int8 and cloud.",
    ),
]
DEFAULT_URL = "http://127.0.0.1:8000"
DEFAULT_PREFIX = "movielens-"


class _Response(Protocol):
    status_code: int

    def json(self) -> Any: ...


class RegistryClient(Protocol):
    """What pushing needs of an HTTP client: ``httpx.Client`` (or a test client) with the
    cloud's base URL."""

    def post(
        self,
        url: str,
        *,
        headers: Mapping[str, str],
        data: Mapping[str, str],
        files: Mapping[str, tuple[str, bytes, str]],
    ) -> _Response: ...


@dataclass(frozen=True)
class Pushed:
    """One model's registration: its registry name, and the version it holds now."""

    name: str
    version: int | None  # None when the registry already had exactly this file
    message: str


class PushError(Exception):
    """A registration the cloud refused, or a build directory with nothing to push."""


def registry_name(prefix: str, model: str) -> str:
    return f"{prefix}{model.replace('_', '-')}"


def push_models(
    out_dir: Path, client: RegistryClient, token: str, prefix: str = DEFAULT_PREFIX
) -> list[Pushed]:
    """Register every model of a build directory as the next version of its name.

    A model whose latest version already has exactly these bytes is left as it is, so
    pushing the same deterministic build twice is harmless.
    """
    built = _read_cards(out_dir)
    pushed: list[Pushed] = []
    for model in _PUSH_ORDER:
        card = built[model]
        name = registry_name(prefix, model)
        path = out_dir / f"{model}.onnx"  # the contract's name, whatever the card says
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise PushError(
                f"cannot read {path}: {exc.strerror or exc}; rebuild with `tandem models build`."
            ) from exc
        response = client.post(
            "/v1/models",
            headers={"Authorization": f"Bearer {token}"},
            data={
                "name": name,
                "target": str(card["target"]),
                "description": str(card.get("description", ""))[:_DESCRIPTION_LIMIT],
                "metrics": json.dumps(_registry_metrics(card)),
            },
            files={"file": (path.name, data, "application/octet-stream")},
        )
        body = _json(response)
        if response.status_code == 201 and isinstance(body, dict):
            version = int(body["version"])
            pushed.append(Pushed(name, version, f"registered {name!r} version {version}"))
        elif _error(body)[0] == "duplicate_model_content":
            pushed.append(Pushed(name, None, f"{name!r} unchanged: {_error(body)[1]}"))
        else:
            done = ", ".join(p.name for p in pushed) or "none"
            raise PushError(
                f"registering {name!r} failed: {_error(body)[1] or f'HTTP {response.status_code}'}"
                f" (registered before it: {done})"
            )
    return pushed


def _read_cards(out_dir: Path) -> dict[str, dict[str, Any]]:
    path = out_dir / "cards.json"
    try:
        built = json.loads(path.read_text())
    except FileNotFoundError:
        raise PushError(
            f"{path} does not exist; build the models first with "
            f"`tandem models build --data DIR --out {out_dir}`."
        ) from None
    except (OSError, ValueError) as exc:
        raise PushError(f"cannot read {path}: {exc}; rebuild with `tandem models build`.") from exc
    missing = [m for m in _PUSH_ORDER if not isinstance(built, dict) or m not in built]
    if missing:
        raise PushError(
            f"{path} has no card for {', '.join(missing)}; rebuild with `tandem models build`."
        )
    return {m: dict(built[m]) for m in _PUSH_ORDER}


def _registry_metrics(card: Mapping[str, Any]) -> dict[str, float]:
    found = card.get("metrics", {})
    metrics = {str(k): float(v) for k, v in found.items()} if isinstance(found, dict) else {}
    if "size_bytes" in card:
        metrics["size_bytes"] = float(card["size_bytes"])
    return metrics


def _json(response: _Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def _error(body: Any) -> tuple[str | None, str | None]:
    """The stable code and the message of an error body, where it has them."""
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        return None, None
    code, message = error.get("code"), error.get("message")
    return (
        code if isinstance(code, str) else None,
        message if isinstance(message, str) else None,
    )


def _push_or_exit(out_dir: Path, url: str, token: str, prefix: str) -> None:
    import httpx

    try:
        with httpx.Client(
            base_url=url.rstrip("/"), timeout=httpx.Timeout(30.0, write=600.0)
        ) as client:
            results = push_models(out_dir, client, token, prefix)
    except httpx.HTTPError as exc:
        typer.echo(
            f"error: cannot reach {url.rstrip('/')}/v1/models: {exc}. Is the cloud running?",
            err=True,
        )
        raise typer.Exit(1) from exc
    except PushError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    for result in results:
        typer.echo(result.message)


def _require_token(token: str | None) -> str:
    if not token:
        typer.echo(
            "error: registering models needs an admin key: pass --token or set TANDEM_TOKEN.",
            err=True,
        )
        raise typer.Exit(2)
    return token


def _check_prefix(prefix: str) -> None:
    import re

    from cloud.registry.schemas import MODEL_NAME_PATTERN

    longest = registry_name(prefix, "edge_int8")
    if not re.fullmatch(MODEL_NAME_PATTERN, longest) or len(longest) > 64:
        typer.echo(
            f"error: --prefix {prefix!r} makes the name {longest!r}, which the registry "
            "refuses: use lowercase letters, digits, '.', '_' or '-', starting with a letter "
            "or digit, 55 characters at most.",
            err=True,
        )
        raise typer.Exit(2)


@models_app.command("build")
def build(
    data: Annotated[
        Path, typer.Option("--data", help="A MovieLens directory: ratings.csv and movies.csv.")
    ],
    out: Annotated[Path, typer.Option("--out", help="Where to write the models and cards.")],
    seed: Annotated[int, typer.Option(help="Seed; the same seed builds the same files.")] = 0,
    quick: Annotated[
        bool, typer.Option("--quick", help="Train on a slice for one epoch (seconds; for tests).")
    ] = False,
    push: Annotated[
        bool, typer.Option("--push", help="Then register the models in the cloud's registry.")
    ] = False,
    url: Url = DEFAULT_URL,
    token: Token = None,
    prefix: Prefix = DEFAULT_PREFIX,
) -> None:
    """Train the edge and cloud click-through models on MovieLens, split by time.

    Writes edge.onnx, edge_int8.onnx, cloud.onnx, cards.json, vocab.json and sample inputs.
    """
    from models.build import build_models
    from models.errors import ModelsError

    if push:
        token = _require_token(token)
        _check_prefix(prefix)
    if not 0 <= seed < 2**63:
        typer.echo("error: --seed must be between 0 and 2**63 - 1.", err=True)
        raise typer.Exit(2)
    try:
        result = build_models(data, out, seed=seed, quick=quick)
    except ModelsError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    except OSError as exc:
        typer.echo(f"error: cannot write to {out}: {exc.strerror or exc}", err=True)
        raise typer.Exit(1) from exc
    typer.echo(f"{'model':<10} {'file':<16} {'target':<7} {'bytes':>9} {'held-out AUC':>13}")
    for name, card in result.cards.items():
        typer.echo(
            f"{name:<10} {result.files[name].name:<16} {card['target']:<7} "
            f"{card['size_bytes']:>9} {card['metrics']['auc']:>13.4f}"
        )
    typer.echo(
        f"built in {result.seconds:.1f} s (seed {seed}{', quick' if quick else ''}) into {out}; "
        "model cards in cards.json",
        err=True,
    )
    if push and token is not None:
        _push_or_exit(out, url, token, prefix)


@models_app.command("push")
def push_command(
    out: Annotated[Path, typer.Argument(help="A directory written by `tandem models build`.")],
    url: Url = DEFAULT_URL,
    token: Token = None,
    prefix: Prefix = DEFAULT_PREFIX,
) -> None:
    """Register the models of a build directory as new versions in the cloud's registry."""
    token = _require_token(token)
    _check_prefix(prefix)
    _push_or_exit(out, url, token, prefix)
