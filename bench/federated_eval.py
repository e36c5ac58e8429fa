"""Federated learning on MovieLens: FedSubAvg against FedAvg, and anonymous user embeddings
against a linking attacker.

Data: `../shared/datasets/movielens-small`, cut at the median timestamp
(`models/federated_data.py`). The base model trains centrally on the ratings before the cut.
Every user with at least 10 ratings after it is one **device** (321 users; `--quick`: the
first 200 by id): the oldest 70 % of its post-cut ratings are its local data, the newest
30 % are held out. Each device learns its anonymous embedding's distribution from its local
data (`device_sdk.AnonymousEmbedding`) and trains with `device_sdk.train_update`, whose
`ModelUpdate` (the wire model, validated) is what the cloud would receive.

- **Rounds.** Each round samples `--clients` devices (the same devices, local data and
  seeds for both algorithms). Round 1 aggregates byte-identical updates both ways; from
  then on each algorithm's devices start from its own global model. Updates are combined
  with `cloud.federation.aggregate.fedsubavg` and `fedavg` and applied at server rate 1.
  Test AUC (pooled over every device's held-out ratings, each with a fresh anonymous
  embedding; the same draws at every evaluation, so the curves differ by the models
  only) after every round; `rounds_ratio_fedsubavg_vs_fedavg` = the rounds FedSubAvg
  needs to reach FedAvg's final AUC / FedAvg's rounds to reach it.
- **Linking attack.** Every device uploads `--uploads` embeddings; the attacker gets
  `--labelled` of each user's with their user, and names the user of the rest (best of
  nearest centroid, softmax classifier, k-means + Hungarian; `bench/linking_attack.py`),
  each averaged over 3 fresh sets of uploads (`--quick`: 2). Beside them, the oracle: the
  expected accuracy of the best possible attacker, who knows every user's distribution.
- **Utility.** Base models trained with no embedding, a static embedding (the user's exact
  mean: linkable) and anonymous ones at several settings; `utility_retained` = (AUC
  anonymous - AUC none) / (AUC static - AUC none) at the default setting.

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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]  # noqa: E402

from bench.linking_attack import attack  # noqa: E402
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


@dataclass
class Device:
    local: LocalExamples
    test: LocalExamples
    embedding: AnonymousEmbedding


def _devices(data: fd.FederatedData, arrays: dict[str, Any], limit: int | None) -> list[Device]:
    ratings = data.devices
    users, counts = np.unique(ratings.user, return_counts=True)
    users = users[counts >= MIN_RATINGS][:limit]
    out = []
    for number, user in enumerate(users):
        rows = np.flatnonzero(ratings.user == user)
        cut = round(len(rows) * LOCAL_SHARE)
        part = [rows[:cut], rows[cut:]]
        local, test = (
            LocalExamples(ratings.item[r], ratings.genres[r], ratings.click[r]) for r in part
        )
        embedding = AnonymousEmbedding.from_arrays(arrays, rng=np.random.default_rng(number))
        embedding.observe(local.item, local.click)
        out.append(Device(local, test, embedding))
    return out


def _test_auc(params: dict[str, np.ndarray], devices: list[Device], seed: int) -> float:
    model = TrainableModel(params)
    rng = np.random.default_rng(seed)
    scores, labels = [], []
    for device in devices:
        mean = device.embedding.mean()
        user = fm.draw(
            np.repeat(mean[None, :], len(device.test), 0), device.embedding.anonymity, rng
        )
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
    Bayes-optimal attacker that knows every user's distribution exactly."""
    means = np.stack([d.embedding.mean() for d in devices])
    users = np.repeat(np.arange(len(devices)), uploads)
    marks = (np.arange(len(users)) % uploads) < labelled
    runs: dict[str, list[float]] = {}
    for repeat in range(repeats):
        rng = np.random.default_rng([7, repeat])
        embeddings = fm.draw(means[users], anonymity, rng)
        result = attack(embeddings, users, marks, rng)
        scores = {
            "nearest_centroid": result.nearest_centroid,
            "classifier": result.classifier,
            "clustering": result.clustering,
            "oracle": _oracle(embeddings[~marks], users[~marks], means, anonymity),
        }
        for name, value in scores.items():
            runs.setdefault(name, []).append(value)
    out = {name: float(np.mean(values)) for name, values in runs.items()}
    out["best"] = max(out["nearest_centroid"], out["classifier"], out["clustering"])
    return out


def _oracle(x: np.ndarray, users: np.ndarray, means: np.ndarray, anonymity: float) -> float:
    """The expected accuracy of the best possible attacker: each upload's user is one of
    the users whose box holds it, all equally likely (their densities are equal)."""
    inside = np.all(
        np.abs(x[:, None, :] - (1.0 - anonymity) * means[None, :, :]) <= anonymity / 2 + 1e-6,
        axis=2,
    )
    return float(np.mean(inside[np.arange(len(users)), users] / inside.sum(axis=1)))


def _utility(
    data: fd.FederatedData, devices: list[Device], config: fm.FederatedConfig, limit: int | None,
    settings: tuple[float, ...],
) -> dict[str, float]:  # fmt: skip
    """Held-out AUC of base models trained per mode / setting (before any round)."""
    out = {}
    for label, mode, anonymity in [
        ("none", fm.NONE, 0.0),
        ("static", fm.STATIC, 0.0),
        *[(f"a={a:g}", fm.ANONYMOUS, a) for a in settings],
    ]:
        base = fm.train_base(data, mode=mode, anonymity=anonymity, config=config, limit=limit)
        rng = np.random.default_rng(3)
        scores, labels = [], []
        for device in devices:
            ranks = np.repeat(device.embedding.mean()[None, :], len(device.test), 0)
            user = fm.user_input(mode, ranks, anonymity, rng)
            inputs: dict[str, np.ndarray] = {
                "item": device.test.item,
                "genres": device.test.genres,
                "user": user,
            }
            scores.append(base.model.predict(base.params, inputs))
            labels.append(device.test.click)
        out[label] = metrics.auc(np.concatenate(labels), np.concatenate(scores))
        print(f"  utility {label}: AUC {out[label]:.4f}", flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="200 devices, fewer rounds")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--clients", type=int, default=None, help="devices per round")
    parser.add_argument("--uploads", type=int, default=40, help="embeddings per device")
    parser.add_argument("--labelled", type=int, default=5, help="of them, labelled")
    parser.add_argument("--anonymity", type=float, default=fm.DEFAULT_ANONYMITY)
    args = parser.parse_args()
    started = time.perf_counter()
    rounds = args.rounds or (8 if args.quick else 25)
    clients = args.clients or (40 if args.quick else 50)
    limit = None
    config = fm.FederatedConfig(epochs=1 if args.quick else 3)
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
        settings = tuple(sorted({*CURVE, args.anonymity}))
        repeats = 2 if args.quick else 3
        attacks = {a: _attack(devices, a, args.uploads, args.labelled, repeats) for a in settings}
        utility = _utility(data, devices, config, limit, settings)
    _report(args, devices, curves, sub_rounds, avg_rounds, attacks, utility, update_bytes, started)


def _report(
    args: argparse.Namespace, devices: list[Device], curves: dict[str, list[float]],
    sub_rounds: int | None, avg_rounds: int | None, attacks: dict[float, dict[str, float]],
    utility: dict[str, float], update_bytes: int, started: float,
) -> None:  # fmt: skip
    users = len(devices)
    random_guess = 1.0 / users
    gain_static = utility["static"] - utility["none"]
    ratio = (sub_rounds / avg_rounds) if sub_rounds and avg_rounds else None
    print("\nround | FedSubAvg AUC | FedAvg AUC")
    for r, (s, a) in enumerate(zip(curves["fedsubavg"], curves["fedavg"], strict=True)):
        print(f"{r:5d} | {s:.4f}        | {a:.4f}")
    print(
        "\nanonymity | bound (x random) | attack acc (x random) | oracle (x random) | AUC    "
        "| utility retained"
    )
    blank = "-                     | -                "
    print(f"static    | 1 user           | {blank} | {utility['static']:.4f} | 1.00")
    for a, result in attacks.items():
        auc = utility[f"a={a:g}"]
        best, oracle = result["best"], result["oracle"]
        print(
            f"{a:9.2f} | {1 / a:16.2f} | {best:.4f} ({best / random_guess:4.2f}x)       "
            f" | {oracle:.4f} ({oracle / random_guess:4.2f}x)   | {auc:.4f} | "
            f"{(auc - utility['none']) / gain_static:.2f}"
        )
    print(f"none      | -                | {blank} | {utility['none']:.4f} | 0.00")
    default = attacks[args.anonymity]
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
        "attack_acc": round(default["best"], 5),
        "attack_by_method": {
            k: round(v, 5) for k, v in default.items() if k not in ("best", "oracle")
        },
        "attack_oracle": round(default["oracle"], 5),
        "random_guess": round(random_guess, 5),
        "attack_vs_random": round(default["best"] / random_guess, 3),
        "attribution_bound_vs_random": round(1 / args.anonymity, 3),
        "auc_none": round(utility["none"], 4),
        "auc_static": round(utility["static"], 4),
        "auc_anonymous": round(utility[f"a={args.anonymity:g}"], 4),
        "utility_retained": round(
            (utility[f"a={args.anonymity:g}"] - utility["none"]) / gain_static, 3
        ),
        "update_bytes_median": update_bytes,
        "seconds": round(time.perf_counter() - started, 1),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, load "
        f"{os.getloadavg()[0]:.1f}, Python {platform.python_version()}",
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
