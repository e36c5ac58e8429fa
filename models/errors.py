"""The errors of the models package: one root, a subclass per situation."""

from __future__ import annotations


class ModelsError(Exception):
    """Root of every error the models package raises on purpose."""


class DatasetError(ModelsError):
    """The training data is missing, unreadable or malformed; the message names the file."""


class OutputError(ModelsError):
    """The output directory cannot be created or written."""


class ExportError(ModelsError):
    """An exported ONNX graph failed its checks (checker, or agreement with numpy)."""
