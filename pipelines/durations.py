"""Durations in specs: ``"250ms"``, ``"10s"``, ``"5m"``, ``"1h"``, ``"7d"``, or a number of seconds.

A string is a decimal number and one unit (``ms``, ``s``, ``m``, ``h``, ``d``), no spaces:
``"1.5h"`` is 5400 seconds. A bare JSON number is seconds (``90`` or ``0.5``); booleans are
refused. Every duration is at most :data:`MAX_DURATION_S` (366 days): nothing on a device
needs to remember events longer, and the cap keeps window arithmetic exact.
"""

from __future__ import annotations

import math
import re

MAX_DURATION_S = 366 * 86400.0
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_PATTERN = re.compile(r"^([0-9]{1,9}(?:\.[0-9]{1,6})?)(ms|s|m|h|d)$")


def parse_duration(value: object) -> float | None:
    """Seconds for ``value``, or None if it is not a duration of this format (negative,
    not finite, over :data:`MAX_DURATION_S`, a bool, or a string of another shape)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        match = _PATTERN.match(value)
        if match is None:
            return None
        seconds = float(match.group(1)) * _UNITS[match.group(2)]
    else:
        return None
    if not math.isfinite(seconds) or seconds < 0 or seconds > MAX_DURATION_S:
        return None
    return seconds


def format_duration(seconds: float) -> str:
    """A short text for ``seconds`` in the largest unit that divides it (``"5m"``)."""
    for unit in ("d", "h", "m", "s"):
        size = _UNITS[unit]
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"
