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
    ``server_message`` carry the cloud's ``{"error": {"code", "message"}}`` body when it sent one.
    """

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        code: str | None = None,
        server_message: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.code = code
        self.server_message = server_message


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
