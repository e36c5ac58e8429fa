"""Federation's branch of the error tree (``cloud.core.errors``): each with a stable code."""

from __future__ import annotations

from cloud.core.errors import Conflict, InvalidInput, NotFound


class RoundNotFound(NotFound):
    code = "round_not_found"


class RoundAlreadyOpen(Conflict):
    """A model has one open round at a time."""

    code = "round_already_open"


class FederationNotEnabled(Conflict):
    """Updates and rounds for a model that has no cloud validation set yet."""

    code = "federation_not_enabled"


class BaseVersionMismatch(Conflict):
    """An update trained on another version than the open round's base."""

    code = "base_version_mismatch"


class UnknownParameter(InvalidInput):
    """An update names a tensor that is not a trainable initializer of the base model."""

    code = "unknown_parameter"


class ParameterShapeMismatch(InvalidInput):
    """A delta whose shape (or row width) differs from its initializer's."""

    code = "parameter_shape_mismatch"


class RowIdOutOfRange(InvalidInput):
    """A sparse delta names a row past the end of its embedding table."""

    code = "row_id_out_of_range"


class InvalidValidationSet(InvalidInput):
    """A validation .npz that is unreadable or does not fit the model's inputs."""

    code = "invalid_validation_set"


class InvalidDeployTarget(InvalidInput):
    """A round's deploy section names a task that cannot carry the model's new version."""

    code = "invalid_deploy_task"
