"""The blob index: which stored blobs exist for the API, and who may read them."""

from __future__ import annotations

from sqlalchemy.orm import Session

from cloud.auth.principal import DevicePrincipal, Principal
from cloud.blobs.tables import BlobRow
from cloud.core.errors import BlobNotFound


def record_blob(
    session: Session,
    sha256: str,
    size: int,
    *,
    device_readable: bool,
    media_type: str = "application/octet-stream",
) -> BlobRow:
    """Index a stored blob; a blob once readable by devices stays readable."""
    row = session.get(BlobRow, sha256)
    if row is None:
        row = BlobRow(
            sha256=sha256, size=size, media_type=media_type, device_readable=device_readable
        )
        session.add(row)
    elif device_readable and not row.device_readable:
        row.device_readable = True
    return row


def readable_blob(session: Session, sha256: str, principal: Principal) -> BlobRow:
    """The blob's index entry if ``principal`` may read it.

    A device asking for a blob not meant for devices gets the same 404 as for a missing
    one, so it cannot probe which cloud artifacts exist.
    """
    row = session.get(BlobRow, sha256)
    if row is None or (isinstance(principal, DevicePrincipal) and not row.device_readable):
        raise BlobNotFound(f"No blob with sha256 {sha256} is available to you.")
    return row
