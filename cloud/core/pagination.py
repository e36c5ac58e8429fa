"""Opaque cursors for keyset pagination: the position after which the next page starts."""

from __future__ import annotations

import base64
import binascii
import json

from cloud.core.db import INT32_MAX
from cloud.core.errors import InvalidCursor

_FOREIGN_CURSOR = (
    "The cursor is not one this server issued; pass next_cursor from the previous page unchanged."
)


def encode_cursor(position: int) -> str:
    return base64.urlsafe_b64encode(json.dumps({"after": position}).encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> int:
    """The position in ``cursor``; InvalidCursor for anything ``encode_cursor`` cannot have made.

    Positions are INTEGER keys, so one past INT32_MAX is forged: binding it would overflow
    the column type (a 500 on PostgreSQL) rather than find nothing.
    """
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        after = json.loads(base64.urlsafe_b64decode(padded.encode("ascii")))["after"]
    except (
        ValueError,
        KeyError,
        TypeError,
        RecursionError,
        binascii.Error,
        UnicodeEncodeError,
    ) as exc:
        raise InvalidCursor(_FOREIGN_CURSOR) from exc
    if not isinstance(after, int) or isinstance(after, bool) or not 0 <= after <= INT32_MAX:
        raise InvalidCursor(_FOREIGN_CURSOR)
    return after
