"""The task bundle format: deterministic packing, hostile archives, signatures."""

from __future__ import annotations

import base64
import hashlib
import io
import os
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from device_sdk import InvalidBundle, InvalidSignature, bundle
from device_sdk.wire import FileDigest, TaskManifest
from tests.task_factories import (
    hostile_bundle,
    make_task_dir,
    manifest_json,
    packed,
    regular,
    special,
    tar_gz,
)

Signer = Callable[[TaskManifest], str]


def signing_key() -> tuple[Signer, str]:
    """A fresh Ed25519 key: a function signing a manifest, and the base64 public key."""
    private = Ed25519PrivateKey.generate()
    public = private.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )

    def sign(manifest: TaskManifest) -> str:
        return base64.b64encode(private.sign(manifest.canonical_bytes())).decode()

    return sign, base64.b64encode(public).decode()


def member_names(data: bytes) -> list[str]:
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        return tar.getnames()


# --- pack -----------------------------------------------------------------------------


def test_pack_is_deterministic(tmp_path: Path) -> None:
    """Packing the same directory twice, with file times changed between, gives equal bytes."""
    directory = make_task_dir(tmp_path, files={"main.py": "x = 1\n", "data/a.txt": b"a"})
    first = bundle.pack(directory)[1]
    for path in directory.rglob("*"):
        os.utime(path, (1_000_000, 1_000_000))
    assert bundle.pack(directory)[1] == first


def test_pack_lists_every_file_with_its_digest(tmp_path: Path) -> None:
    """The packed manifest lists each file, nested ones included, with its sha256 and size."""
    files = {"main.py": b"print(1)\n", "models/m.onnx": b"\x08\x01" * 100, "empty.txt": b""}
    manifest, data = bundle.pack(make_task_dir(tmp_path, files=files))
    assert manifest.files == {
        name: FileDigest(sha256=hashlib.sha256(content).hexdigest(), size=len(content))
        for name, content in files.items()
    }
    assert bundle.read(data).files == files


def test_pack_skips_hidden_files_and_pycache(tmp_path: Path) -> None:
    """Dotfiles, dot-directories and __pycache__ are neither listed nor packed."""
    files = {
        "main.py": b"",
        ".env": b"SECRET=1",
        ".git/config": b"[core]",
        "lib/.hidden": b"h",
        "__pycache__/main.cpython-311.pyc": b"\0",
        "lib/__pycache__/x.pyc": b"\0",
        "lib/util.py": b"",
    }
    manifest, data = bundle.pack(make_task_dir(tmp_path, files=files))
    assert set(manifest.files) == {"main.py", "lib/util.py"}
    assert member_names(data) == ["manifest.json", "lib/util.py", "main.py"]


def test_pack_refuses_symlinks(tmp_path: Path) -> None:
    """A symbolic link in the task directory is refused, naming the link."""
    directory = make_task_dir(tmp_path)
    (directory / "link.py").symlink_to(directory / "main.py")
    with pytest.raises(InvalidBundle, match=r"link\.py is a symbolic link"):
        bundle.pack(directory)


def test_pack_refuses_a_missing_entry(tmp_path: Path) -> None:
    """An entry script that is not in the directory is refused, naming it."""
    directory = make_task_dir(tmp_path, entry="run.py")
    with pytest.raises(InvalidBundle, match=r"does not contain: run\.py"):
        bundle.pack(directory)


def test_pack_refuses_a_missing_model_file(tmp_path: Path) -> None:
    """A model reference to a file that is not in the directory is refused, naming it."""
    directory = make_task_dir(tmp_path, models=[{"name": "ranker", "file": "models/r.onnx"}])
    with pytest.raises(InvalidBundle, match=r"models/r\.onnx"):
        bundle.pack(directory)


def test_pack_refuses_a_directory_without_manifest(tmp_path: Path) -> None:
    """A directory with no manifest.json is refused with a message saying it needs one."""
    with pytest.raises(InvalidBundle, match=r"has no manifest\.json"):
        bundle.pack(tmp_path)


def test_pack_refuses_an_invalid_manifest(tmp_path: Path) -> None:
    """A manifest with a bad field is refused with the field named."""
    with pytest.raises(InvalidBundle, match="name"):
        bundle.pack(make_task_dir(tmp_path, name="Not Valid"))


# --- read -----------------------------------------------------------------------------


def test_read_returns_the_packed_manifest_and_files(tmp_path: Path) -> None:
    """Reading a packed bundle gives back its manifest and every file's bytes."""
    manifest, data = bundle.pack(make_task_dir(tmp_path))
    read = bundle.read(data)
    assert read.manifest == manifest
    assert set(read.files) == {"main.py"}


def test_read_refuses_data_that_is_not_gzip() -> None:
    """Bytes that are not a .tar.gz are refused as not a task bundle."""
    with pytest.raises(InvalidBundle, match="Not a task bundle"):
        bundle.read(b"PK\x03\x04 this is a zip, not a tar.gz")


def test_read_refuses_a_truncated_bundle(tmp_path: Path) -> None:
    """A bundle cut short inside its header or its files is refused."""
    data = packed(tmp_path, files={"main.py": os.urandom(20_000)})
    for cut in (10, len(data) // 2, len(data) - 600):
        with pytest.raises(InvalidBundle):
            bundle.read(data[:cut])


def test_read_refuses_a_bundle_missing_its_gzip_trailer(tmp_path: Path) -> None:
    """A bundle cut short in its gzip trailer (CRC and length) is refused."""
    data = packed(tmp_path)
    with pytest.raises(InvalidBundle):
        bundle.read(data[:-4])


@pytest.mark.parametrize("name", ["../x", "/abs", "a/../../b", "./main.py", "a//b"])
def test_read_refuses_unsafe_member_names(name: str) -> None:
    """A member whose name escapes or is not a plain relative path is refused, listed or not."""
    listed = hostile_bundle(regular(name, b"x"), listed={name: b"x"})
    unlisted = hostile_bundle(regular(name, b"x"), listed={})
    for data in (listed, unlisted):
        with pytest.raises(InvalidBundle):
            bundle.read(data)


@pytest.mark.parametrize(
    ("kind", "target"),
    [(tarfile.SYMTYPE, "/etc/passwd"), (tarfile.LNKTYPE, "manifest.json"), (tarfile.DIRTYPE, "")],
)
def test_read_refuses_links_and_directories(kind: bytes, target: str) -> None:
    """Symlink, hard link and directory members are refused as not regular files."""
    data = hostile_bundle(special("main.py", kind, target), listed={})
    with pytest.raises(InvalidBundle, match="not a regular file"):
        bundle.read(data)


def test_read_refuses_duplicate_members() -> None:
    """A file that appears twice (the second could shadow the first) is refused."""
    data = hostile_bundle(
        regular("main.py", b"good"), regular("main.py", b"evil"), listed={"main.py": b"good"}
    )
    with pytest.raises(InvalidBundle, match="appears twice"):
        bundle.read(data)


def test_read_refuses_a_duplicate_manifest() -> None:
    """A second manifest.json after the first is refused."""
    data = hostile_bundle(regular("manifest.json", manifest_json({})), listed={})
    with pytest.raises(InvalidBundle, match="appears twice"):
        bundle.read(data)


def test_read_refuses_an_unlisted_file() -> None:
    """A file the manifest does not list is refused, named in the message."""
    data = hostile_bundle(regular("extra.py", b"x"), listed={})
    with pytest.raises(InvalidBundle, match=r"unlisted \['extra\.py'\]"):
        bundle.read(data)


def test_read_refuses_a_missing_file() -> None:
    """A file the manifest lists but the bundle lacks is refused, named in the message."""
    data = hostile_bundle(listed={"main.py": b"x"})
    with pytest.raises(InvalidBundle, match=r"missing \['main\.py'\]"):
        bundle.read(data)


def test_read_refuses_a_digest_mismatch() -> None:
    """A file whose bytes differ from its listed digest is refused."""
    data = hostile_bundle(regular("main.py", b"evil"), listed={"main.py": b"good"})
    with pytest.raises(InvalidBundle, match="does not match its digest"):
        bundle.read(data)


def test_read_refuses_a_size_mismatch_with_the_right_digest() -> None:
    """A listed size that differs from the file's is refused even when the sha256 matches."""
    manifest = manifest_json({"main.py": b"x"}).replace(b'"size": 1', b'"size": 2')
    data = tar_gz(regular("manifest.json", manifest), regular("main.py", b"x"))
    with pytest.raises(InvalidBundle, match="does not match its digest"):
        bundle.read(data)


@pytest.mark.parametrize(
    "manifest",
    [b"not json", b"[]", b'{"name": "hello"}', b'{"name": "x", "version": 1, "surprise": 1}'],
)
def test_read_refuses_an_invalid_manifest(manifest: bytes) -> None:
    """A manifest that is not JSON, lacks fields or has unknown ones is refused."""
    with pytest.raises(InvalidBundle, match="manifest is invalid"):
        bundle.read(tar_gz(regular("manifest.json", manifest)))


def test_read_refuses_a_bundle_without_manifest() -> None:
    """A bundle with no manifest.json is refused."""
    with pytest.raises(InvalidBundle, match=r"no manifest\.json"):
        bundle.read(tar_gz(regular("main.py", b"x")))


def test_read_refuses_a_bundle_that_unpacks_past_the_limit() -> None:
    """A small archive that inflates past max_unpacked_bytes (a bomb) is refused."""
    zeros = b"\0" * (4 << 20)
    data = hostile_bundle(regular("big.bin", zeros), listed={"big.bin": zeros})
    assert len(data) < 64 << 10
    with pytest.raises(InvalidBundle, match="unpacks to more than"):
        bundle.read(data, max_unpacked_bytes=1 << 20)


# --- signatures -----------------------------------------------------------------------


def test_verify_signature_accepts_a_valid_signature(tmp_path: Path) -> None:
    """A signature by the pinned key over the manifest's canonical JSON verifies."""
    sign, public = signing_key()
    manifest = bundle.pack(make_task_dir(tmp_path))[0]
    bundle.verify_signature(manifest, sign(manifest), public)


def test_verify_signature_refuses_a_tampered_manifest(tmp_path: Path) -> None:
    """A manifest changed after signing no longer verifies."""
    sign, public = signing_key()
    manifest = bundle.pack(make_task_dir(tmp_path))[0]
    tampered = manifest.model_copy(update={"entry": None})
    with pytest.raises(InvalidSignature, match="does not verify"):
        bundle.verify_signature(tampered, sign(manifest), public)


def test_verify_signature_refuses_another_key(tmp_path: Path) -> None:
    """A signature by a key other than the pinned one does not verify."""
    sign, _ = signing_key()
    _, pinned = signing_key()
    manifest = bundle.pack(make_task_dir(tmp_path))[0]
    with pytest.raises(InvalidSignature):
        bundle.verify_signature(manifest, sign(manifest), pinned)


@pytest.mark.parametrize(
    ("signature", "key"),
    [("not base64!", None), (None, "%%%"), ("", None), (None, base64.b64encode(b"short").decode())],
)
def test_verify_signature_refuses_malformed_input(
    tmp_path: Path, signature: str | None, key: str | None
) -> None:
    """Signatures or keys that are not base64, or the wrong length, are InvalidSignature."""
    sign, public = signing_key()
    manifest = bundle.pack(make_task_dir(tmp_path))[0]
    with pytest.raises(InvalidSignature):
        bundle.verify_signature(
            manifest, sign(manifest) if signature is None else signature, key or public
        )


def test_read_verified_accepts_a_signed_bundle(tmp_path: Path) -> None:
    """A bundle with the expected digest, signed manifest and matching files is returned."""
    sign, public = signing_key()
    manifest, data = bundle.pack(make_task_dir(tmp_path))
    verified = bundle.read_verified(
        data,
        expected_sha256=hashlib.sha256(data).hexdigest(),
        signed_manifest=manifest,
        signature_b64=sign(manifest),
        public_key_b64=public,
    )
    assert verified.manifest == manifest


def test_read_verified_refuses_a_digest_mismatch(tmp_path: Path) -> None:
    """Bytes whose sha256 is not the expected one (truncated, altered) are refused."""
    sign, public = signing_key()
    manifest, data = bundle.pack(make_task_dir(tmp_path))
    with pytest.raises(InvalidBundle, match="truncated or was altered"):
        bundle.read_verified(
            data[:-1],
            expected_sha256=hashlib.sha256(data).hexdigest(),
            signed_manifest=manifest,
            signature_b64=sign(manifest),
            public_key_b64=public,
        )


def test_read_verified_refuses_a_bundle_whose_manifest_was_not_signed(tmp_path: Path) -> None:
    """A valid bundle with another manifest than the signed one is refused."""
    sign, public = signing_key()
    signed = bundle.pack(make_task_dir(tmp_path))[0]
    _, other = bundle.pack(make_task_dir(tmp_path, files={"main.py": "import os\n"}))
    with pytest.raises(InvalidBundle, match="not the manifest the cloud signed"):
        bundle.read_verified(
            other,
            expected_sha256=hashlib.sha256(other).hexdigest(),
            signed_manifest=signed,
            signature_b64=sign(signed),
            public_key_b64=public,
        )
