"""The errors of the pipelines library: one root, and the refusal of a bad spec.

A spec is refused whole, with *every* problem named by its path in the spec
(``stages[2].window.size: must be a positive duration``), so whoever wrote it fixes all
of them in one go. The engine itself never raises on an event: a bad event is counted and
skipped (see :mod:`pipelines.engine`).
"""

from __future__ import annotations


class PipelineError(Exception):
    """Root of the errors this library raises on purpose."""


class SpecError(PipelineError, ValueError):
    """A pipeline spec that is not valid; ``problems`` lists each one as ``path: what``."""

    def __init__(self, problems: list[str], *, subject: str = "The pipeline spec") -> None:
        self.problems = list(problems)
        shown = "; ".join(self.problems[:20])
        more = f"; and {len(self.problems) - 20} more" if len(self.problems) > 20 else ""
        count = len(self.problems)
        super().__init__(
            f"{subject} is invalid ({count} problem{'s' if count != 1 else ''}): {shown}{more}. "
            "Fix each path named and validate again."
        )
