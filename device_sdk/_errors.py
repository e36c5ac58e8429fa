"""The SDK's error tree: one root, subclasses named for the situation."""

from __future__ import annotations


class DeviceSDKError(Exception):
    """Root of every error the device SDK raises on purpose."""


class InvalidBundle(DeviceSDKError, ValueError):
    """A task bundle is malformed, incomplete, or does not match its manifest."""


class InvalidSignature(InvalidBundle):
    """A task manifest's signature does not verify against the pinned platform key."""


class CloudError(DeviceSDKError):
    """The cloud could not be reached or answered with an error.

    ``status_code`` is the HTTP status (None when no response came back); ``code`` and
    ``server_message`` carry the cloud's ``{"error": {"code", "message"}}`` body when it sent one,
    and ``details`` that body's ``details`` (e.g. a 422's field errors), when it had any.
    """

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        code: str | None = None,
        server_message: str | None = None,
        details: object | None = None,
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.code = code
        self.server_message = server_message
        self.details = details


class CloudUnavailable(CloudError):
    """A network failure, timeout, 5xx or 429: transient; the SDK retries with backoff."""


class CloudRejected(CloudError):
    """The cloud refused a request with a 4xx that retrying will not fix."""


class RegistrationRefused(CloudRejected):
    """The cloud refused to register the device, e.g. an unknown or revoked enrollment key."""


class DeviceRevoked(CloudRejected):
    """The cloud no longer accepts this device's token (401): the device was removed."""


class LocalStoreError(DeviceSDKError):
    """The device's local store (``<data_dir>/device.db``) cannot be used as it is."""


class IdentityMismatch(LocalStoreError):
    """The data directory holds the identity of a device registered with another cloud."""


class InvalidModelInput(DeviceSDKError, ValueError):
    """Inputs for a model do not match its signature: a missing or unknown input name, or
    an array of the wrong dtype, rank or size. The message names the input and what the
    model expects."""


class UnknownModel(DeviceSDKError, LookupError):
    """A task asked for a model its manifest does not list (``ctx.model(name)``)."""


class TaskNotInstalled(DeviceSDKError, LookupError):
    """The app asked for a task that has no active version on this device."""


class TaskFailed(DeviceSDKError):
    """A task's call raised, or the task could not be loaded; the cause is ``__cause__``.

    ``task`` and ``version`` name the task version that failed (``version`` is None when
    no version could be read).
    """

    def __init__(self, message: str, *, task: str, version: int | None) -> None:
        super().__init__(message)
        self.task = task
        self.version = version


class TaskTimeout(TaskFailed, TimeoutError):
    """A task's call ran past its time limit (``resources.timeout_ms``, or ``timeout_s``)."""


class InvalidPayload(DeviceSDKError, ValueError):
    """An item given to the outbox can never be uploaded: an unknown channel, a payload that
    is not a JSON object, or one over the cloud's size limit. Raised by ``put``, at once."""


class OutboxFull(DeviceSDKError):
    """The outbox is at its size cap, and making room would evict items of channels with a
    higher priority than the new item's; the new item was not stored."""


class UploadRejected(CloudRejected):
    """The cloud refused a batch of outbox items with a 4xx that retrying will not fix.

    ``rejected`` holds the positions (in the batch) of the items the cloud named as invalid;
    it is empty when the cloud named none, i.e. the whole batch was refused.
    """

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        code: str | None = None,
        server_message: str | None = None,
        details: object | None = None,
        rejected: tuple[int, ...] = (),
    ) -> None:
        super().__init__(
            message,
            status_code=status_code,
            code=code,
            server_message=server_message,
            details=details,
        )
        self.rejected = rejected


class InvalidEvent(DeviceSDKError, ValueError):
    """An event given to ``Device.track`` (or ``EventLog.record``) cannot be kept: a type
    or id that is not 1-64 characters, attributes that are not scalars or lists of scalars,
    attributes over the size limit, or a ts that is not a finite number."""


class InvalidFeature(DeviceSDKError, ValueError):
    """A feature cannot be stored: a bad name, a value JSON cannot carry, a value over the
    size limit, or a TTL that is not a positive number of seconds."""
