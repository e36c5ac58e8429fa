"""The wire contract: every request and response that crosses between a device and the cloud.

Both sides import these pydantic schemas, so a field renamed here is renamed everywhere.
Requests refuse unknown fields (a typo is an error, not a silent no-op); responses ignore
unknown fields so an older SDK keeps working against a newer cloud.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

Tag = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._:-]+$")]
ShortText = Annotated[str, StringConstraints(min_length=1, max_length=32, strip_whitespace=True)]


class Request(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Response(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class DeviceAttributes(Request):
    """What a device says about itself; deployments target devices by these."""

    platform: ShortText | None = Field(default=None, examples=["android"])
    os_version: ShortText | None = Field(default=None, examples=["14.1"])
    app_version: ShortText | None = Field(default=None, examples=["5.2.0"])
    model: Annotated[str, StringConstraints(min_length=1, max_length=64)] | None = Field(
        default=None, examples=["Pixel 8"]
    )
    region: ShortText | None = Field(default=None, examples=["eu-west"])
    tags: Annotated[list[Tag], Field(max_length=32)] = Field(default_factory=list)


class RegisterDeviceRequest(Request):
    enrollment_key: Annotated[str, StringConstraints(min_length=1, max_length=256)]
    attributes: DeviceAttributes = Field(default_factory=DeviceAttributes)


class DeviceInfo(Response):
    device_id: str
    attributes: DeviceAttributes
    created_at: datetime
    last_seen: datetime


class RegisterDeviceResponse(DeviceInfo):
    """The device's identity. ``token`` is shown once; the cloud keeps only its hash."""

    token: str


class ErrorDetail(Response):
    code: str
    message: str
    details: object | None = None


class ErrorBody(Response):
    error: ErrorDetail
