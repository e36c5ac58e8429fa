"""Test data for tasks: task directories, packed bundles, and hand-built (hostile) bundles."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
import tempfile
from pathlib import Path
from typing import Any

from device_sdk import bundle

MAIN_PY = "def run(ctx, inputs):\n    return {'echo': inputs}\n"


def make_task_dir(
    root: Path,
    *,
    name: str = "hello",
    version: int = 1,
    files: dict[str, bytes | str] | None = None,
    **manifest: Any,
) -> Path:
    """A fresh task directory under ``root``: ``manifest.json`` plus ``files``.

    By default the task has an entry ``main.py``; ``manifest`` adds or overrides fields.
    """
    directory = Path(tempfile.mkdtemp(dir=root, prefix=f"{name}-{version}-"))
    source = {"name": name, "version": version, "entry": "main.py", **manifest}
    (directory / "manifest.json").write_text(json.dumps(source), encoding="utf-8")
    for relative, content in (files if files is not None else {"main.py": MAIN_PY}).items():
        path = directory / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, str):
            path.write_text(content, encoding="utf-8")
        else:
            path.write_bytes(content)
    return directory


def packed(root: Path, **task: Any) -> bytes:
    """The bundle bytes of a task directory made by ``make_task_dir(root, **task)``."""
    return bundle.pack(make_task_dir(root, **task))[1]


def manifest_json(files: dict[str, bytes], **fields: Any) -> bytes:
    """Manifest bytes listing ``files`` with their true digests; nothing is validated."""
    listed = {
        n: {"sha256": hashlib.sha256(d).hexdigest(), "size": len(d)} for n, d in files.items()
    }
    return json.dumps({"name": "hello", "version": 1, "files": listed, **fields}).encode()


def regular(name: str, data: bytes) -> tuple[tarfile.TarInfo, bytes]:
    """A regular-file tar member."""
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, data


def special(name: str, kind: bytes, target: str = "") -> tuple[tarfile.TarInfo, bytes]:
    """A tar member of another ``kind`` (``tarfile.SYMTYPE``, ``LNKTYPE``, ``DIRTYPE``...)."""
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    return info, b""


def tar_gz(*members: tuple[tarfile.TarInfo, bytes]) -> bytes:
    """A .tar.gz of exactly ``members``, in order, duplicates and all."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if info.isfile() else None)
    return gzip.compress(raw.getvalue())


def hostile_bundle(*members: tuple[tarfile.TarInfo, bytes], listed: dict[str, bytes]) -> bytes:
    """A bundle whose manifest lists ``listed`` (true digests) and holds ``members``."""
    return tar_gz(regular("manifest.json", manifest_json(listed)), *members)
