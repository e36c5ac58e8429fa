"""RoutingAgent: routing.json, local or cloud, fallbacks when the cloud is away, reports."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, cast

import numpy as np
import pytest

from cloud.router.export import to_onnx
from device_sdk import (
    CloudClient,
    CloudUnavailable,
    InvalidModelInput,
    RoutingAgent,
    RoutingNotConfigured,
)
from device_sdk.router_wire import DecisionReceipt, DecisionReport, RouterExport
from tests.cloud.router.test_model import export_of, trained

EASY = "question 1001: river capital season"
HARD = "question 1000: river integral season"
CONFIG = {"router": "qa", "cloud_model": "qa-large", "text_input": "prompt"}


class FakeClient:
    """Just the routing calls of CloudClient, answering from a trained model."""

    def __init__(self) -> None:
        model, _ = trained()
        self.onnx = to_onnx(model)
        self.export = export_of(model, self.onnx).model_copy(update={"threshold": 0.5})
        self.down = False
        self.inferred: list[dict[str, Any]] = []
        self.reports: list[DecisionReport] = []

    def _check(self) -> None:
        if self.down:
            raise CloudUnavailable("the cloud is away")

    def router_export(self, name: str) -> RouterExport:
        self._check()
        return self.export

    def fetch_blob(self, sha256: str, size: int) -> bytes:
        self._check()
        return self.onnx

    def report_decisions(self, name: str, report: DecisionReport) -> DecisionReceipt:
        self._check()
        self.reports.append(report)
        return DecisionReceipt(accepted=len(report.decisions), threshold=0.5)

    def infer(self, model: str, inputs: dict[str, Any]) -> dict[str, Any]:
        self._check()
        self.inferred.append(inputs)
        return {"y": np.zeros((1, 2), dtype=np.float32)}


def task_dir(tmp_path: Path, config: object = CONFIG) -> Path:
    directory = tmp_path / "task"
    directory.mkdir()
    if config is not None:
        text = config if isinstance(config, str) else json.dumps(config)
        (directory / "routing.json").write_text(text)
    return directory


def agent_for(client: FakeClient | None, **options: Any) -> RoutingAgent:
    return RoutingAgent(lambda: cast(CloudClient, client), **options)


def local(inputs: Any) -> Any:
    return {"where": "edge", "inputs": inputs}


def test_easy_request_runs_locally_without_the_text(tmp_path: Path) -> None:
    """An easy prompt runs locally; the routing text is not passed on."""
    agent = agent_for(FakeClient())
    out = agent.predict(
        "qa",
        task_dir(tmp_path),
        {"prompt": EASY, "x": 1},
        routing="auto",
        run_local=local,
    )
    assert out == {"where": "edge", "inputs": {"x": 1}}
    decision = agent.last_decision("qa")
    assert decision is not None and decision.target == "edge" and set(decision.d) == {"m0"}


def test_hard_request_asks_the_cloud_model(tmp_path: Path) -> None:
    """A hard prompt goes to the cloud's model with the other inputs."""
    client = FakeClient()
    out = agent_for(client).predict(
        "qa",
        task_dir(tmp_path),
        {"prompt": HARD, "x": 1},
        routing="auto",
        run_local=local,
    )
    assert list(out) == ["y"]
    assert client.inferred == [{"x": 1}]


def test_routing_cloud_always_asks_the_cloud(tmp_path: Path) -> None:
    """routing="cloud" skips the router and calls the cloud model."""
    client = FakeClient()
    agent_for(client).predict(
        "qa", task_dir(tmp_path), {"prompt": "river", "x": 1}, routing="cloud", run_local=local
    )
    assert len(client.inferred) == 1


def test_unreachable_cloud_falls_back_to_the_device(tmp_path: Path) -> None:
    """With the cloud away, even a hard prompt runs on the device."""
    client = FakeClient()
    client.down = True
    out = agent_for(client).predict(
        "qa", task_dir(tmp_path), {"prompt": HARD}, routing="auto", run_local=local
    )
    assert out["where"] == "edge"


def test_stopped_device_routes_locally(tmp_path: Path) -> None:
    """Without a cloud client (device not started) the request runs locally."""
    out = agent_for(None).predict(
        "qa", task_dir(tmp_path), {"prompt": HARD}, routing="auto", run_local=local
    )
    assert out["where"] == "edge"


def test_cloud_model_failure_falls_back_to_the_device(tmp_path: Path) -> None:
    """If the cloud model cannot be reached after a cloud decision, the device answers."""
    client = FakeClient()
    agent = agent_for(client)
    directory = task_dir(tmp_path)
    agent.predict("qa", directory, {"prompt": EASY}, routing="auto", run_local=local)
    client.down = True
    out = agent.predict("qa", directory, {"prompt": HARD}, routing="auto", run_local=local)
    assert out["where"] == "edge"


def test_flush_reports_every_decision_in_order(tmp_path: Path) -> None:
    """flush sends the pending decisions; a failed report keeps them for the next try."""
    client = FakeClient()
    agent = agent_for(client)
    directory = task_dir(tmp_path)
    for text in (EASY, HARD, EASY):
        agent.predict("qa", directory, {"prompt": text}, routing="auto", run_local=local)
    client.down = True
    assert agent.flush() == 0
    client.down = False
    assert agent.flush() == 3
    assert [d.cloud for d in client.reports[0].decisions] == [False, True, False]


def test_reports_go_out_every_report_every_decisions(tmp_path: Path) -> None:
    """Past report_every pending decisions a background report is sent."""
    client = FakeClient()
    agent = agent_for(client, report_every=2)
    directory = task_dir(tmp_path)
    for text in (EASY, EASY):
        agent.predict("qa", directory, {"prompt": text}, routing="auto", run_local=local)
    agent.flush()  # waits for the background report: one report at a time
    assert sum(len(r.decisions) for r in client.reports) == 2


@pytest.mark.parametrize(
    "config",
    [None, "{not json", {"router": "qa"}, {"router": "qa", "cloud_model": "m"}, {**CONFIG, "x": 1}],
    ids=["missing", "not-json", "no-model", "no-input", "unknown-field"],
)
def test_unusable_routing_json_says_what_it_needs(tmp_path: Path, config: object) -> None:
    """A missing, malformed or incomplete routing.json raises RoutingNotConfigured."""
    with pytest.raises(RoutingNotConfigured, match=r"routing\.json"):
        agent_for(FakeClient()).predict(
            "qa", task_dir(tmp_path, config), {"prompt": "x"}, routing="auto", run_local=local
        )


@pytest.mark.parametrize("inputs", [{"prompt": 3}, {"other": "x"}, ["prompt"]])
def test_routing_text_must_be_a_string(tmp_path: Path, inputs: Any) -> None:
    """The routing text must be a str under the configured key of a mapping."""
    with pytest.raises(InvalidModelInput, match="prompt"):
        agent_for(FakeClient()).predict(
            "qa", task_dir(tmp_path), inputs, routing="auto", run_local=local
        )


def test_unknown_routing_mode_is_refused(tmp_path: Path) -> None:
    """Only local, auto and cloud are routing modes."""
    with pytest.raises(ValueError, match=r"routing must be one of"):
        agent_for(FakeClient()).predict(
            "qa", task_dir(tmp_path), {"prompt": "x"}, routing="sometimes", run_local=local
        )
