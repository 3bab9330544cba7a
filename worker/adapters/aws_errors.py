"""AWS failures as icefeed errors, for the operator side and the readiness probes.

One AWS call made with ``aws_call`` raises, instead of a botocore exception: ``NotFound`` (a
ConfigError) for a queue or bucket that does not exist, an ``AwsDenied`` IcefeedError for
refused credentials or permissions, and a ``TransientError`` ``AwsUnavailable`` for anything else
(the client itself already retried throttling). The worker's own message source keeps its
retrying wrapper (``worker.adapters.aws``)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

from botocore.exceptions import BotoCoreError, ClientError

from worker.domain.errors import ConfigError, IcefeedError, TransientError

T = TypeVar("T")

AWS_ERRORS = (BotoCoreError, ClientError, OSError)
NOT_FOUND_CODES = frozenset({"NoSuchBucket", "AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist", "404"})
DENIED_CODES = frozenset(
    {"AccessDenied", "AccessDeniedException", "403", "InvalidAccessKeyId", "SignatureDoesNotMatch"}
)


class NotFound(ConfigError):
    """Something an operator named does not exist (a queue, a bucket, a proposal, an ingestion)."""

    error_class = "NotFound"


def aws_error(exc: BaseException, what: str) -> IcefeedError:
    """A botocore failure as an icefeed error with a readable message."""
    if isinstance(exc, ClientError):
        code = exc.response.get("Error", {}).get("Code", "")
        message = exc.response.get("Error", {}).get("Message", "") or str(exc)
        if code in NOT_FOUND_CODES:
            return NotFound(f"{what}: {code}: {message}")
        if code in DENIED_CODES:
            return IcefeedError(f"{what}: access denied ({code}): {message}", error_class="AwsDenied")
        return TransientError(f"{what}: {code}: {message}", error_class="AwsUnavailable")
    return TransientError(f"{what}: {type(exc).__name__}: {exc}", error_class="AwsUnavailable")


async def aws_call(op: Callable[[], Awaitable[T]], what: str) -> T:
    """One AWS call with a readable error (the client itself retries throttling)."""
    try:
        return await op()
    except AWS_ERRORS as exc:
        raise aws_error(exc, what) from None
