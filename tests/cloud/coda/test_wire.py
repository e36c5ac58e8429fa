"""The cloud reads CoDA's wire format from the SDK's public module, not a private one."""

from __future__ import annotations

import ast
from pathlib import Path

import device_sdk
from device_sdk import coda_wire

CODA = Path(__file__).resolve().parents[3] / "cloud" / "coda"


def _imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


def test_cloud_coda_imports_no_private_sdk_module() -> None:
    """No module of cloud/coda imports a `device_sdk._*` module; it uses device_sdk.coda_wire."""
    used = set().union(*(_imported_modules(p) for p in sorted(CODA.glob("*.py"))))
    private = sorted(m for m in used if m.startswith("device_sdk._"))
    assert private == [] and "device_sdk.coda_wire" in used


def test_the_sdk_exports_the_wire_classes_themselves() -> None:
    """device_sdk's RetrieveRequest, RetrieveResponse and PoolSample are the wire module's."""
    assert device_sdk.RetrieveRequest is coda_wire.RetrieveRequest
    assert device_sdk.RetrieveResponse is coda_wire.RetrieveResponse
    assert device_sdk.PoolSample is coda_wire.PoolSample
