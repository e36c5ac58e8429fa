"""Federated learning on MovieLens: FedSubAvg against FedAvg, and anonymous user embeddings
against a linking attacker.

Data: `../shared/datasets/movielens-small`, cut at the median timestamp
(`models/federated_data.py`). The base model trains centrally on the ratings before the cut.
Every user with at least 10 ratings after it is one **device** (321 users; `--quick`: the
first 200 by id): the oldest 70 % of its post-cut ratings are its local data, the newest
30 % are held out. Each device observes its ratings as they happen
(`device_sdk.AnonymousEmbedding`, statistics of recent behaviour with the bundle's
half-life): its embedding at a request is drawn around its position at that moment (every
held-out rating is a request, made knowing the ratings before it), and local training gives
each example a draw around its position at that example. It trains with
`device_sdk.train_update`, whose `ModelUpdate` (the wire model, validated) is what the
cloud would receive.

- **Rounds.** Each round samples `--clients` devices (the same devices, local data and
  seeds for both algorithms). Round 1 aggregates byte-identical updates both ways; from
  then on each algorithm's devices start from its own global model. Updates are combined
  with `cloud.federation.aggregate.fedsubavg` and `fedavg` and applied at server rate 1.
  Test AUC (pooled over every device's held-out ratings, each with a fresh anonymous
  embedding; the same draws at every evaluation, so the curves differ by the models
  only) after every round; `rounds_ratio_fedsubavg_vs_fedavg` = the rounds FedSubAvg
  needs to reach FedAvg's final AUC / FedAvg's rounds to reach it (FedAvg's last round
  when its curve is still rising, so the ratio depends on the number of rounds).
- **Linking attack.** Every device uploads `--uploads` embeddings, each at one of its
  held-out requests picked at random; the attacker gets `--labelled` of each user's with
  their user (so spread over the user's history too), and names the user of the rest
  (best of nearest centroid, softmax classifier, k-means + Hungarian;
  `bench/linking_attack.py`), each averaged over 12 fresh sets of uploads at the default
  setting, 3 at the others (`--quick`: 2; `attack_vs_random_se` is the best one's standard
  error over the sets). Beside them, the oracle: the expected accuracy of the best
  attacker judging each upload on its own, who knows every user's distribution (an
  attacker grouping uploads may do better; the measured ones are under the bound on
  average, and a single set of uploads can exceed it).
- **Utility.** Held-out AUC of base models trained with no embedding, the static embedding
  (the user's exact all-time mean over its local data: linkable), a learned per-user id
  embedding (`bench/id_embedding.py`), the exact request-time position (`a = 0`: linkable)
  and anonymous ones at several settings; `utility_retained` = (AUC anonymous - AUC none)
  / (AUC static - AUC none) at the default setting, also given against the id embedding
  and against the exact request-time position. Two rows take the user's current session
  away (`utility_retained_history_1h_old`): a request knows its local data and only the
  held-out ratings at least an hour older. `--half-life 0` runs the earlier
  mechanism (all-time statistics, fixed at the end of the local data).

    python bench/federated_eval.py --quick     # within a minute
    python bench/federated_eval.py

The last line printed is a JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]  # noqa: E402

from bench.id_embedding import id_embedding_auc  # noqa: E402
from bench.linking_attack import attack, oracle  # noqa: E402
from cloud.federation.aggregate import apply, fedavg, fedsubavg  # noqa: E402
from device_sdk import (  # noqa: E402
    AnonymousEmbedding,
    LocalExamples,
    LocalTraining,
    TrainableModel,
    train_update,
)
from device_sdk.federation_wire import ModelUpdate  # noqa: E402
from models import federated as fm  # noqa: E402
from models import federated_data as fd  # noqa: E402
from models import metrics  # noqa: E402

DATA = ROOT.parent / "shared" / "datasets" / "movielens-small"
CACHE = ROOT / ".bench_cache" / "federated"
LOCAL_SHARE = 0.7
MIN_RATINGS = 10
CURVE = (0.3, 0.4, 0.5, 0.6, 0.8)
SESSION_GAP = 3600  # seconds: the "no current session" rows
PREVIOUS_ANONYMITY = 0.55  # the default with all-time statistics, kept as a row


@dataclass
class Device:
    local: LocalExamples
    test: LocalExamples
    embedding: AnonymousEmbedding  # learned from the local data
    requests: np.ndarray  # [len(test), rank]: the exact position at each held-out request


def _user_rows(data: fd.FederatedData, limit: int | None) -> list[np.ndarray]:
    ratings = data.devices
    users, counts = np.unique(ratings.user, return_counts=True)
    users = users[counts >= MIN_RATINGS][:limit]
    return [np.flatnonzero(ratings.user == user) for user in users]


def _devices(data: fd.FederatedData, arrays: dict[str, Any], limit: int | None) -> list[Device]:
    ratings = data.devices
    out = []
    for number, rows in enumerate(_user_rows(data, limit)):
        cut = round(len(rows) * LOCAL_SHARE)
        local, test = (
            LocalExamples(ratings.item[r], ratings.genres[r], ratings.click[r])
            for r in (rows[:cut], rows[cut:])
        )
        embedding = AnonymousEmbedding.from_arrays(arrays, rng=np.random.default_rng(number))
        # The device's position at each local example, as its requests were drawn then,
        # and at each held-out request: the SDK's own statistics of everything the user did
        # before it (the local data, then the earlier held-out ratings).
        local = replace(local, user=embedding.observe_each(local.item, local.click))
        live = AnonymousEmbedding.from_arrays(arrays)
        live.observe(local.item, local.click)
        requests = live.observe_each(test.item, test.click)
        out.append(Device(local, test, embedding, requests))
    return out


def _test_auc(params: dict[str, np.ndarray], devices: list[Device], seed: int) -> float:
    model = TrainableModel(params)
    rng = np.random.default_rng(seed)
    scores, labels = [], []
    for device in devices:
        user = fm.draw(device.requests, device.embedding.anonymity, rng)
        scores.append(model.predict(device.test.item, device.test.genres, user))
        labels.append(device.test.click)
    return metrics.auc(np.concatenate(labels), np.concatenate(scores))


def _rounds(
    base: dict[str, np.ndarray], devices: list[Device], rounds: int, clients: int,
    training: LocalTraining,
) -> tuple[dict[str, list[float]], int]:  # fmt: skip
    """Test AUC after each round (index 0: the base) for both algorithms."""
    globals_ = {"fedsubavg": base, "fedavg": base}
    curves = {name: [_test_auc(base, devices, 0)] for name in globals_}
    sampler = np.random.default_rng(11)
    update_bytes = 0
    for round_number in range(1, rounds + 1):
        chosen = sampler.choice(len(devices), clients, replace=False)
        for name, aggregate in (("fedsubavg", fedsubavg), ("fedavg", fedavg)):
            updates: list[ModelUpdate] = []
            for i in chosen:
                device = devices[i]
                # The same seeds for both algorithms: identical draws and batches.
                device.embedding._rng = np.random.default_rng([round_number, int(i)])
                updates.append(
                    train_update(
                        TrainableModel(globals_[name]), device.local, device.embedding,
                        model_name="movielens-federated", base_version=round_number,
                        config=training, rng=np.random.default_rng([round_number, int(i), 1]),
                    )
                )  # fmt: skip
            if round_number == 1 and name == "fedsubavg":
                update_bytes = int(np.median([len(u.model_dump_json()) for u in updates]))
            agg = aggregate(updates)
            globals_[name] = apply(globals_[name], agg)
            curves[name].append(_test_auc(globals_[name], devices, 0))
        print(
            f"  round {round_number:2d}: fedsubavg {curves['fedsubavg'][-1]:.4f}  "
            f"fedavg {curves['fedavg'][-1]:.4f}",
            flush=True,
        )
    return curves, update_bytes


def _reach(curve: list[float], target: float) -> int | None:
    for round_number, value in enumerate(curve):
        if round_number and value >= target - 1e-12:
            return round_number
    return None


def _attack(
    devices: list[Device], anonymity: float, uploads: int, labelled: int, repeats: int
) -> dict[str, float]:
    """Each attacker's accuracy, averaged over ``repeats`` fresh sets of uploads (one set
    is noisy: a few thousand scored uploads at well under 1 % accuracy), and the
    Bayes-optimal attacker judging each upload on its own, knowing every user's
    distribution exactly.

    A device's uploads are made at its held-out requests, ``uploads`` of them at random
    (several may share one request's statistics); the attacker's labelled ones are random
    among them, so they span the user's history as the unlabelled ones do."""
    users = np.repeat(np.arange(len(devices)), uploads)
    marks = (np.arange(len(users)) % uploads) < labelled
    runs: dict[str, list[float]] = {}
    for repeat in range(repeats):
        rng = np.random.default_rng([7, repeat])
        centres = np.concatenate(
            [d.requests[rng.integers(0, len(d.requests), uploads)] for d in devices]
        )
        embeddings = fm.draw(centres, anonymity, rng)
        result = attack(embeddings, users, marks, rng)
        scores = {
            "nearest_centroid": result.nearest_centroid,
            "classifier": result.classifier,
            "clustering": result.clustering,
            "oracle": oracle(
                embeddings[~marks], users[~marks], [d.requests for d in devices], anonymity
            ),
        }
        for name, value in scores.items():
            runs.setdefault(name, []).append(value)
    out = {name: float(np.mean(values)) for name, values in runs.items()}
    best = max(("nearest_centroid", "classifier", "clustering"), key=out.__getitem__)
    out["best"] = out[best]
    out["best_se"] = float(np.std(runs[best], ddof=1) / np.sqrt(repeats)) if repeats > 1 else 0.0
    return out


@dataclass(frozen=True)
class Variant:
    """One row of the utility table: what the base model's ``user`` input holds."""

    label: str
    mode: str
    anonymity: float
    half_life: float | None  # None: all-time statistics, fixed at the end of local data
    # Seconds: a request knows the held-out ratings at least this old only (local data
    # always): what is left without the user's current session.
    gap: int = 0


def _utility(
    data: fd.FederatedData, config: fm.FederatedConfig, limit: int | None,
    variants: list[Variant],
) -> dict[str, float]:  # fmt: skip
    """Held-out AUC of base models trained per variant (before any round), and of a
    learned per-user id embedding (``id``) on the static variant's base."""
    out = {}
    rows = _user_rows(data, limit)
    for variant in variants:
        variant_config = replace(config, half_life=variant.half_life)
        base = fm.train_base(
            data, mode=variant.mode, anonymity=variant.anonymity, config=variant_config
        )
        ranks = _test_ranks(data, base, rows, variant.gap)
        rng = np.random.default_rng(3)
        scores, labels = [], []
        for user_rows, user_ranks in zip(rows, ranks, strict=True):
            test = data.devices.take(user_rows[round(len(user_rows) * LOCAL_SHARE) :])
            inputs: dict[str, np.ndarray] = {
                "item": test.item,
                "genres": test.genres,
                "user": fm.user_input(variant.mode, user_ranks, variant.anonymity, rng),
            }
            scores.append(base.model.predict(base.params, inputs))
            labels.append(test.click)
        out[variant.label] = metrics.auc(np.concatenate(labels), np.concatenate(scores))
        print(f"  utility {variant.label}: AUC {out[variant.label]:.4f}", flush=True)
        if variant.label == "static":
            out["id"], strength = id_embedding_auc(data.devices, rows, base, LOCAL_SHARE)
            print(f"  utility id (L2 {strength:g}): AUC {out['id']:.4f}", flush=True)
    return out


def _test_ranks(
    data: fd.FederatedData, base: fm.BaseModel, rows: list[np.ndarray], gap: int
) -> list[np.ndarray]:
    """Each device's ``user`` position at its held-out requests: the all-time statistics
    of its local data (fixed), or with a half-life the statistics at each request (of the
    ratings at least ``gap`` seconds older, beside the local data)."""
    rank = base.model.config.rank
    out = []
    for user_rows in rows:
        cut = round(len(user_rows) * LOCAL_SHARE)
        mine = data.devices.take(user_rows)
        if gap:
            out.append(_gapped_ranks(base, mine, cut, gap))
            continue
        if base.half_life is None:
            stats = fd.user_statistics(mine.take(np.arange(cut)), base.basis)
            stats = np.repeat(stats, len(user_rows) - cut, axis=0)
        else:
            stats = fd.earlier_statistics(mine, base.basis, base.half_life)[cut:]
        out.append(fd.ranks(stats, base.quantiles)[:, :rank])
    return out


def _gapped_ranks(base: fm.BaseModel, mine: fd.Ratings, cut: int, gap: int) -> np.ndarray:
    device = AnonymousEmbedding.from_arrays(base.embedding_arrays())
    device.observe(mine.item[:cut], mine.click[:cut])
    seen, out = cut, []
    for t in range(cut, len(mine)):
        while seen < t and mine.timestamp[seen] <= mine.timestamp[t] - gap:
            device.observe(mine.item[seen : seen + 1], mine.click[seen : seen + 1])
            seen += 1
        out.append(device.mean())
    return np.stack(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="200 devices, fewer rounds")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--clients", type=int, default=None, help="devices per round")
    parser.add_argument("--uploads", type=int, default=40, help="embeddings per device")
    parser.add_argument("--labelled", type=int, default=5, help="of them, labelled")
    parser.add_argument("--anonymity", type=float, default=fm.DEFAULT_ANONYMITY)
    parser.add_argument(
        "--half-life", type=float, default=fm.FederatedConfig().half_life,
        help="ratings; 0: the user's all-time statistics (the earlier mechanism)",
    )  # fmt: skip
    parser.add_argument("--curve", type=float, nargs="*", default=CURVE, help="settings")
    args = parser.parse_args()
    started = time.perf_counter()
    rounds = args.rounds or (8 if args.quick else 25)
    clients = args.clients or (40 if args.quick else 50)
    limit = None
    half_life = args.half_life or None
    config = fm.FederatedConfig(epochs=1 if args.quick else 3, half_life=half_life)
    training = LocalTraining()
    with threadpool_limits(1):
        data = fd.load(DATA)
        base = fm.train_base(data, anonymity=args.anonymity, config=config, limit=limit)
        npz = base.write_bundle(CACHE / ("quick" if args.quick else "full") / "federated.onnx")
        with np.load(npz) as bundle:
            arrays = {k: bundle[k] for k in bundle.files}
        devices = _devices(data, arrays, 200 if args.quick else None)
        for device in devices:
            device.embedding.anonymity = args.anonymity
        params = TrainableModel.from_arrays(arrays).params
        print(f"{len(devices)} devices, {rounds} rounds of {clients} clients", flush=True)
        curves, update_bytes = _rounds(params, devices, rounds, clients, training)
        target = curves["fedavg"][-1]
        sub_rounds, avg_rounds = (
            _reach(curves["fedsubavg"], target),
            _reach(curves["fedavg"], target),
        )
        settings = tuple(sorted({*args.curve, args.anonymity}))
        # The default's figure is the one quoted: more sets of uploads make it less noisy
        # (one set's best attacker varies by about 0.25x random).
        repeats = {a: 2 if args.quick else (12 if a == args.anonymity else 3) for a in settings}
        attacks = {
            a: _attack(devices, a, args.uploads, args.labelled, repeats[a]) for a in settings
        }
        variants = [
            Variant("none", fm.NONE, 0.0, None),
            Variant("static", fm.STATIC, 0.0, None),
            Variant("exact", fm.STATIC, 0.0, half_life),
            *[Variant(f"a={a:g}", fm.ANONYMOUS, a, half_life) for a in settings],
        ]
        if half_life is not None:
            variants += [
                Variant("exact, 1 h", fm.STATIC, 0.0, half_life, SESSION_GAP),
                Variant("default, 1 h", fm.ANONYMOUS, args.anonymity, half_life, SESSION_GAP),
                Variant("fixed", fm.ANONYMOUS, PREVIOUS_ANONYMITY, None),
            ]
        utility = _utility(data, config, 200 if args.quick else None, variants)
    _report(args, devices, curves, sub_rounds, avg_rounds, attacks, utility, update_bytes, started)


def _report(
    args: argparse.Namespace, devices: list[Device], curves: dict[str, list[float]],
    sub_rounds: int | None, avg_rounds: int | None, attacks: dict[float, dict[str, float]],
    utility: dict[str, float], update_bytes: int, started: float,
) -> None:  # fmt: skip
    users = len(devices)
    random_guess = 1.0 / users
    none = utility["none"]
    gain_static, gain_id = utility["static"] - none, utility["id"] - none
    ratio = (sub_rounds / avg_rounds) if sub_rounds and avg_rounds else None
    print("\nround | FedSubAvg AUC | FedAvg AUC")
    for r, (s, a) in enumerate(zip(curves["fedsubavg"], curves["fedavg"], strict=True)):
        print(f"{r:5d} | {s:.4f}        | {a:.4f}")
    print(
        "\nuser embedding         | bound  | best attacker (x random) | oracle (x random) "
        "| AUC    | kept vs static | kept vs id"
    )

    def row(label: str, bound: str, attacked: str, auc: float) -> None:
        kept = (auc - none) / gain_static, (auc - none) / gain_id
        print(
            f"{label:22s} | {bound:6s} | {attacked} | {auc:.4f} | {kept[0]:14.2f} | {kept[1]:.2f}"
        )

    blank = f"{'-':24s} | {'-':16s}"
    row("static (exact mean)", "1 user", blank, utility["static"])
    row("static id (learned)", "1 user", blank, utility["id"])
    row("exact at request", "1 user", blank, utility["exact"])
    if "fixed" in utility:
        row("exact, >= 1 h old", "1 user", blank, utility["exact, 1 h"])
        row(f"a = {args.anonymity:g}, >= 1 h old", f"{1 / args.anonymity:.2f}x", blank,
            utility["default, 1 h"])  # fmt: skip
        row(f"fixed mean, a = {PREVIOUS_ANONYMITY:g}", f"{1 / PREVIOUS_ANONYMITY:.2f}x", blank,
            utility["fixed"])  # fmt: skip
    for a, result in attacks.items():
        best, oracle_ = result["best"] / random_guess, result["oracle"] / random_guess
        shown = f"{result['best']:.4f} ({best:4.2f}x)", f"{result['oracle']:.4f} ({oracle_:4.2f}x)"
        attacked = f"{shown[0]:24s} | {shown[1]:16s}"
        row(f"request, a = {a:g}", f"{1 / a:.2f}x", attacked, utility[f"a={a:g}"])
    row("none", "-", blank, none)
    default = attacks[args.anonymity]
    anonymous = utility[f"a={args.anonymity:g}"]
    summary = {
        "devices": users,
        "rounds": len(curves["fedavg"]) - 1,
        "fedavg_final_auc": round(curves["fedavg"][-1], 4),
        "fedsubavg_final_auc": round(curves["fedsubavg"][-1], 4),
        "base_auc": round(curves["fedavg"][0], 4),
        "rounds_fedsubavg": sub_rounds,
        "rounds_fedavg": avg_rounds,
        "rounds_ratio_fedsubavg_vs_fedavg": None if ratio is None else round(ratio, 3),
        "anonymity": args.anonymity,
        "half_life": args.half_life or None,
        "attack_acc": round(default["best"], 5),
        "attack_by_method": {
            k: round(v, 5) for k, v in default.items() if k not in ("best", "best_se", "oracle")
        },
        "attack_oracle": round(default["oracle"], 5),
        "random_guess": round(random_guess, 5),
        "attack_vs_random": round(default["best"] / random_guess, 3),
        "attack_vs_random_se": round(default["best_se"] / random_guess, 3),
        "attribution_bound_vs_random": round(1 / args.anonymity, 3),
        "auc_none": round(none, 4),
        "auc_static": round(utility["static"], 4),
        "auc_id_embedding": round(utility["id"], 4),
        "auc_exact_at_request": round(utility["exact"], 4),
        "auc_anonymous": round(anonymous, 4),
        "utility_retained": round((anonymous - none) / gain_static, 3),
        "utility_retained_vs_id_embedding": round((anonymous - none) / gain_id, 3),
        "utility_retained_vs_exact_at_request": round(
            (anonymous - none) / (utility["exact"] - none), 3
        ),
        "utility_retained_history_1h_old": (
            round((utility["default, 1 h"] - none) / gain_static, 3)
            if "default, 1 h" in utility
            else None
        ),
        "update_bytes_median": update_bytes,
        "seconds": round(time.perf_counter() - started, 1),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, load "
        f"{os.getloadavg()[0]:.1f}, Python {platform.python_version()}",
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
