"""The SDK stays embeddable: no cloud dependencies, and a deliberate public surface."""

from __future__ import annotations

import importlib
import inspect
import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import device_sdk

CLOUD_ONLY = {
    "cloud",
    "fastapi",
    "starlette",
    "sqlalchemy",
    "alembic",
    "redis",
    "uvicorn",
    "psycopg",
    "onnx",
}


def test_import_loads_no_cloud_dependency() -> None:
    """`import device_sdk` in a fresh interpreter loads none of the cloud's packages."""
    probe = (
        "import json, sys; import device_sdk; "
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))"
    )
    loaded = set(json.loads(subprocess.check_output([sys.executable, "-c", probe], text=True)))
    assert loaded & CLOUD_ONLY == set()


def test_all_is_sorted_and_resolves() -> None:
    """`device_sdk.__all__` is sorted and every name in it exists."""
    assert list(device_sdk.__all__) == sorted(device_sdk.__all__)
    for name in device_sdk.__all__:
        assert hasattr(device_sdk, name), name


def test_all_exports_every_public_name_of_private_modules() -> None:
    """Every public class or function defined in a `device_sdk._*` module is in `__all__`."""
    missing = []
    for info in pkgutil.iter_modules(device_sdk.__path__, "device_sdk."):
        if not info.name.rsplit(".", 1)[-1].startswith("_"):
            continue
        module = importlib.import_module(info.name)
        for name, value in vars(module).items():
            defined_here = getattr(value, "__module__", None) == module.__name__
            public = not name.startswith("_") and (
                inspect.isclass(value) or inspect.isfunction(value)
            )
            if defined_here and public and name not in device_sdk.__all__:
                missing.append(f"{info.name}.{name}")
    assert missing == []


def test_package_ships_type_information() -> None:
    """device_sdk ships a py.typed marker so apps type-check against it."""
    assert Path(device_sdk.__path__[0], "py.typed").is_file()
