"""The task bundle format, shared by the cloud (publishing) and the device (installing).

A bundle is a gzip-compressed tar holding ``manifest.json`` and the task's files, nothing
else: regular files only, relative paths of safe characters, no links, no duplicates. The
manifest lists every file's sha256 and size. Packing is deterministic (sorted members,
zeroed times and owners), so the same directory always gives the same bundle digest.

The cloud signs the manifest's canonical JSON with its Ed25519 key. A device trusts a
bundle only when (1) the signature verifies against the key it pinned at registration,
(2) the bundle's ``manifest.json`` is that signed manifest, and (3) every file matches
its listed digest. Nothing from a bundle is loaded before all three hold.
"""

from __future__ import annotations

import base64
import binascii
import gzip
import hashlib
import io
import json
import tarfile
import zlib
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature as _CryptoInvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from pydantic import ValidationError

from device_sdk._errors import InvalidBundle, InvalidSignature
from device_sdk.wire import MANIFEST_NAME, FileDigest, TaskManifest
from pipelines import problems_of

MAX_BUNDLE_FILES = 1000
_SKIPPED = {"__pycache__", ".DS_Store"}


@dataclass(frozen=True)
class Bundle:
    """A bundle's manifest and file contents, checked against each other."""

    manifest: TaskManifest
    files: dict[str, bytes]


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _problems(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in e['loc']) or 'manifest'}: {e['msg']}" for e in exc.errors()[:5]
    )


def load_source_manifest(directory: Path) -> dict[str, object]:
    path = directory / MANIFEST_NAME
    if not path.is_file():
        raise InvalidBundle(f"{directory} has no {MANIFEST_NAME}; a task directory needs one.")
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidBundle(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise InvalidBundle(f"{path} must hold a JSON object.")
    return value


def pack(directory: Path) -> tuple[TaskManifest, bytes]:
    """Build the bundle of a task directory: its manifest with every file's digest, and
    the deterministic ``.tar.gz`` bytes. Hidden files and ``__pycache__`` are left out."""
    source = load_source_manifest(directory)
    files: dict[str, bytes] = {}
    for path in sorted(directory.rglob("*")):
        relative = path.relative_to(directory)
        if any(part.startswith(".") or part in _SKIPPED for part in relative.parts):
            continue
        if path.is_symlink():
            raise InvalidBundle(f"{relative} is a symbolic link; bundles hold regular files only.")
        if path.is_file() and relative.as_posix() != MANIFEST_NAME:
            files[relative.as_posix()] = path.read_bytes()
    digests = {
        name: FileDigest(sha256=_sha256(data), size=len(data)) for name, data in files.items()
    }
    try:
        manifest = TaskManifest.model_validate({**source, "files": digests})
    except ValidationError as exc:
        raise InvalidBundle(f"{directory / MANIFEST_NAME} is invalid: {_problems(exc)}") from exc
    check_references(manifest)
    check_pipeline(manifest)
    return manifest, build(manifest, files)


def check_references(manifest: TaskManifest) -> None:
    """The entry script and every model file must be files of the bundle."""
    missing = [m.file for m in manifest.models if m.file not in manifest.files]
    if manifest.entry is not None and manifest.entry not in manifest.files:
        missing.append(manifest.entry)
    if missing:
        raise InvalidBundle(
            f"Task {manifest.name!r} refers to files it does not contain: {', '.join(missing)}."
        )


def check_pipeline(manifest: TaskManifest) -> None:
    """A manifest's pipeline spec must be valid, as the cloud refuses to publish it
    otherwise: :class:`InvalidBundle` names every bad path (``pipeline.stages[2]...``)."""
    if manifest.pipeline is None:
        return
    problems = problems_of(manifest.pipeline)
    if problems:
        raise InvalidBundle(
            f"Task {manifest.name!r} version {manifest.version}: the manifest's pipeline is "
            f"invalid: {'; '.join(f'pipeline.{p}' for p in problems)}. Fix manifest.json and "
            "pack again."
        )


def build(manifest: TaskManifest, files: dict[str, bytes]) -> bytes:
    """Deterministic ``.tar.gz`` bytes of ``manifest`` (canonical JSON) and ``files``."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in [(MANIFEST_NAME, manifest.canonical_bytes()), *sorted(files.items())]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            info.mtime = 0
            tar.addfile(info, io.BytesIO(data))
    return gzip.compress(raw.getvalue(), mtime=0)


def read(data: bytes, *, max_unpacked_bytes: int = 1 << 30) -> Bundle:
    """Parse bundle bytes and check every file against the manifest inside.

    Refuses anything but regular files with safe names, duplicates, files the manifest
    does not list, listed files that are missing, digests that differ, and archives that
    unpack to more than ``max_unpacked_bytes`` (a decompression bomb).
    """
    tar_bytes = _inflate(data, max_unpacked_bytes)
    contents: dict[str, bytes] = {}
    try:
        with tarfile.open(fileobj=io.BytesIO(tar_bytes), mode="r:") as tar:
            for member in tar:
                if not member.isfile():
                    raise InvalidBundle(f"Bundle member {member.name!r} is not a regular file.")
                if member.name in contents:
                    raise InvalidBundle(f"Bundle member {member.name!r} appears twice.")
                if len(contents) >= MAX_BUNDLE_FILES:
                    raise InvalidBundle(f"Bundle holds more than {MAX_BUNDLE_FILES} files.")
                extracted = tar.extractfile(member)
                if extracted is None:
                    raise InvalidBundle(f"Bundle member {member.name!r} cannot be read.")
                contents[member.name] = extracted.read()
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise InvalidBundle(f"Not a task bundle (expected a .tar.gz): {exc}.") from exc
    manifest_bytes = contents.pop(MANIFEST_NAME, None)
    if manifest_bytes is None:
        raise InvalidBundle(f"The bundle has no {MANIFEST_NAME}.")
    try:
        manifest = TaskManifest.model_validate_json(manifest_bytes)
    except ValidationError as exc:
        raise InvalidBundle(f"The bundle's manifest is invalid: {_problems(exc)}") from exc
    check_files(manifest, contents)
    check_references(manifest)
    return Bundle(manifest=manifest, files=contents)


def _inflate(data: bytes, limit: int) -> bytes:
    """The whole gzip stream, inflated with a bound, its trailer (CRC, length) checked.

    Inflating before tarfile parses anything bounds everything tarfile may hold in memory
    (pax and long-name headers included), and a truncated download fails here rather than
    passing as a shorter archive.
    """
    parts: list[bytes] = []
    size = 0
    try:
        with gzip.GzipFile(fileobj=io.BytesIO(data)) as stream:
            while chunk := stream.read(1 << 20):
                size += len(chunk)
                if size > limit:
                    raise InvalidBundle(f"Bundle unpacks to more than {limit} bytes.")
                parts.append(chunk)
    except (OSError, EOFError, zlib.error) as exc:
        raise InvalidBundle(
            f"Not a task bundle (expected a complete .tar.gz; it may be truncated): {exc}."
        ) from exc
    return b"".join(parts)


def check_files(manifest: TaskManifest, files: dict[str, bytes]) -> None:
    extra = sorted(set(files) - set(manifest.files))
    missing = sorted(set(manifest.files) - set(files))
    if extra or missing:
        raise InvalidBundle(
            f"Bundle files differ from the manifest: unlisted {extra or 'none'}, "
            f"missing {missing or 'none'}."
        )
    for name, digest in manifest.files.items():
        data = files[name]
        if len(data) != digest.size or _sha256(data) != digest.sha256:
            raise InvalidBundle(f"File {name!r} does not match its digest in the manifest.")


def verify_signature(manifest: TaskManifest, signature_b64: str, public_key_b64: str) -> None:
    """Raise InvalidSignature unless ``signature_b64`` signs ``manifest`` with the key."""
    try:
        key = Ed25519PublicKey.from_public_bytes(base64.b64decode(public_key_b64, validate=True))
        signature = base64.b64decode(signature_b64, validate=True)
    except (ValueError, binascii.Error) as exc:
        raise InvalidSignature(f"Malformed key or signature: {exc}.") from exc
    try:
        key.verify(signature, manifest.canonical_bytes())
    except _CryptoInvalidSignature as exc:
        raise InvalidSignature(
            f"The signature of task {manifest.name!r} version {manifest.version} does not verify "
            "against the pinned platform key; the bundle was not installed."
        ) from exc


def read_verified(
    data: bytes,
    *,
    expected_sha256: str,
    signed_manifest: TaskManifest,
    signature_b64: str,
    public_key_b64: str,
) -> Bundle:
    """What a device calls before installing: digest, signature, manifest identity, files."""
    if _sha256(data) != expected_sha256:
        raise InvalidBundle(
            f"The downloaded bundle's sha256 is not {expected_sha256[:12]}...; "
            "it is truncated or was altered."
        )
    verify_signature(signed_manifest, signature_b64, public_key_b64)
    bundle = read(data)
    if bundle.manifest.canonical_bytes() != signed_manifest.canonical_bytes():
        raise InvalidBundle("The bundle's manifest is not the manifest the cloud signed.")
    return bundle
