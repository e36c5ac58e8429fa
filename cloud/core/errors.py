"""The cloud's error tree.

Services raise these; one exception handler (``cloud.core.handlers``) turns each into an
HTTP status and a JSON body ``{"error": {"code": ..., "message": ...}}``. ``code`` is
stable and meant for programs; ``message`` is for people and says what to do next.
"""

from __future__ import annotations

from typing import Any, ClassVar


class TandemError(Exception):
    """Root of every error the cloud raises on purpose."""

    status_code: ClassVar[int] = 500
    code: ClassVar[str] = "internal_error"

    def __init__(self, message: str, *, details: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details
        # Extra response headers, e.g. Content-Range on a 416 or Retry-After on a 429.
        self.headers: dict[str, str] = {}


class InvalidInput(TandemError):
    """The request is well-formed but its content is not acceptable."""

    status_code = 422
    code = "invalid_input"


class BadRequest(TandemError):
    """The request cannot be parsed at all."""

    status_code = 400
    code = "bad_request"


class InvalidCursor(BadRequest):
    code = "invalid_cursor"


class InvalidRange(TandemError):
    status_code = 416
    code = "range_not_satisfiable"


class PayloadTooLarge(TandemError):
    status_code = 413
    code = "payload_too_large"


class Unauthorized(TandemError):
    """No credentials, or credentials nobody issued."""

    status_code = 401
    code = "unauthorized"


class Forbidden(TandemError):
    """Valid credentials that may not do this."""

    status_code = 403
    code = "forbidden"


class InvalidEnrollmentKey(Unauthorized):
    code = "invalid_enrollment_key"


class EnrollmentKeyRevoked(Forbidden):
    code = "enrollment_key_revoked"


class NotFound(TandemError):
    status_code = 404
    code = "not_found"


class DeviceNotFound(NotFound):
    code = "device_not_found"


class ModelNotFound(NotFound):
    code = "model_not_found"


class ModelVersionNotFound(NotFound):
    code = "model_version_not_found"


class BlobNotFound(NotFound):
    code = "blob_not_found"


class EnrollmentKeyNotFound(NotFound):
    code = "enrollment_key_not_found"


class Conflict(TandemError):
    status_code = 409
    code = "conflict"


class DuplicateName(Conflict):
    code = "duplicate_name"


class DuplicateModelContent(Conflict):
    code = "duplicate_model_content"


class InvalidModel(InvalidInput):
    code = "invalid_onnx_model"


class ServiceUnavailable(TandemError):
    status_code = 503
    code = "service_unavailable"


class TaskNotFound(NotFound):
    code = "task_not_found"


class TaskVersionNotFound(NotFound):
    code = "task_version_not_found"


class TaskVersionExists(Conflict):
    code = "task_version_exists"


class InvalidTaskBundle(InvalidInput):
    code = "invalid_bundle"


class DeploymentNotFound(NotFound):
    code = "deployment_not_found"


class UnknownTaskVersion(InvalidInput):
    """A device reported status for a task version that was never published."""

    code = "unknown_task_version"


class EnrollmentKeyExpired(Forbidden):
    code = "enrollment_key_expired"


class EnrollmentKeyExhausted(Forbidden):
    """An enrollment key that has enrolled its ``max_devices``."""

    code = "enrollment_key_exhausted"


class ModelTargetMismatch(Conflict):
    """An upload whose target differs from the one its model name already has."""

    code = "model_target_mismatch"


class InvalidModelInput(InvalidInput):
    """Inference inputs that do not fit the model's signature; ``details`` names the input."""

    code = "invalid_model_input"


class InvalidTensorBody(BadRequest):
    """An inference body that cannot be decoded (truncated .npz, not a zip, bad header)."""

    code = "invalid_tensor_body"


class UnsupportedMediaType(TandemError):
    status_code = 415
    code = "unsupported_media_type"


class NotAcceptable(TandemError):
    status_code = 406
    code = "not_acceptable"


class Overloaded(TandemError):
    """The serving queue is full: retry after the ``Retry-After`` header's seconds."""

    status_code = 429
    code = "overloaded"

    def __init__(self, message: str, *, retry_after_s: int, details: Any = None) -> None:
        super().__init__(message, details=details)
        self.headers["Retry-After"] = str(max(1, retry_after_s))


class ModelLoadFailed(TandemError):
    """A registered model that onnxruntime cannot load on this replica."""

    status_code = 500
    code = "model_load_failed"


class ModelRunFailed(TandemError):
    """onnxruntime failed while running a model on inputs that passed the signature checks."""

    status_code = 500
    code = "model_run_failed"


class RouterNotFound(NotFound):
    code = "router_not_found"


class RouterVersionNotFound(NotFound):
    code = "router_version_not_found"


class RouterNotTrained(Conflict):
    """A router asked to route, or to export, before any version was trained."""

    code = "router_not_trained"


class InvalidObservation(InvalidInput):
    """An observation or route request that does not fit its router's metrics or features."""

    code = "invalid_observation"


class NotEnoughObservations(Conflict):
    """Training asked of a router with too few observations to learn from."""

    code = "not_enough_observations"


class InvalidPipelineSpec(InvalidInput):
    """A pipeline spec (sent to run, or in a task manifest) that does not validate;
    ``details`` lists every problem as ``path: what``."""

    code = "invalid_pipeline_spec"


class PipelineInputTooLarge(InvalidInput):
    """A pipeline run over more events than one request may process."""

    code = "pipeline_input_too_large"


class PoolNotFound(NotFound):
    code = "pool_not_found"


class PoolNotReady(Conflict):
    """A CoDA pool with no index snapshot yet (empty, or its first build is running)."""

    code = "pool_not_ready"


class EmbeddingMismatch(InvalidInput):
    """An embedding whose length differs from the pool's ``dim``."""

    code = "embedding_dim_mismatch"


class RateLimited(TandemError):
    """Too many calls from one caller: retry after the ``Retry-After`` header's seconds."""

    status_code = 429
    code = "rate_limited"

    def __init__(self, message: str, *, retry_after_s: int, details: Any = None) -> None:
        super().__init__(message, details=details)
        self.headers["Retry-After"] = str(max(1, retry_after_s))
