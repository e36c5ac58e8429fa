"""Opaque cursors for keyset pagination: the position after which the next page starts."""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any, TypeVar

from sqlalchemy import Select
from sqlalchemy.orm import InstrumentedAttribute, Session

from cloud.core.db import INT32_MAX
from cloud.core.errors import InvalidCursor

Row = TypeVar("Row")

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


def keyset_page(
    session: Session,
    query: Select[Row],
    key: InstrumentedAttribute[int],
    *,
    limit: int,
    cursor: str | None,
    newest_first: bool = False,
) -> tuple[list[Row], str | None]:
    """One page of ``query``'s rows ordered by the integer column ``key`` (descending when
    ``newest_first``), starting after ``cursor``; and the cursor of the next page, if any."""
    if cursor:
        after = decode_cursor(cursor)
        query = query.where(key < after if newest_first else key > after)
    order = key.desc() if newest_first else key
    rows = list(session.scalars(query.order_by(order).limit(limit + 1)))
    if len(rows) <= limit:
        return rows, None
    last: Any = rows[limit - 1]
    return rows[:limit], encode_cursor(getattr(last, key.key))
