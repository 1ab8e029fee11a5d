"""What cgpu's messages mean: each known message of the CLI mapped to an error class of the taxonomy."""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..errors import (
    ConnectionLostError,
    GpuferryError,
    NotAuthenticatedError,
    QuotaError,
    RemoteFileError,
)

#: cgpu prints this when the terminal closed before its exit sentinel: the outcome is unknown.
LOST_EXIT_CODE = "command finished without reporting an exit code"


@dataclass(frozen=True)
class KnownMessage:
    pattern: re.Pattern[str]
    error: type[GpuferryError]
    cause: str


def known(pattern: str, error: type[GpuferryError], cause: str) -> KnownMessage:
    return KnownMessage(re.compile(pattern, re.IGNORECASE), error, cause)


#: Checked in order; the first match decides. Matching is case-insensitive (see remote-gpu.md).
KNOWN_MESSAGES: tuple[KnownMessage, ...] = (
    known(r"missing colab oauth credentials", NotAuthenticatedError, "cgpu has no Colab credentials"),
    known(r"stored session invalid|session expired", NotAuthenticatedError, "the cgpu session expired"),
    known(r"not authenticated", NotAuthenticatedError, "cgpu is not authenticated"),
    known(r"insufficient quota", QuotaError, "Colab quota is used up"),
    known(r"blocked from accessing colab", QuotaError, "the account is blocked from Colab servers"),
    known(r"maximum number of gpu runtimes", QuotaError, "the account already has the maximum number of GPU runtimes"),
    known(r"no eligible gpu accelerators", QuotaError, "Colab offers no eligible GPU to this account"),
    known(r"temporarily out of gpu capacity", QuotaError, "Colab is temporarily out of GPU capacity"),
    known(LOST_EXIT_CODE, ConnectionLostError, "the cgpu terminal closed before the command reported its exit code"),
    known(r"econnrefused|econnreset|etimedout|socket hang up|enotfound|eai_again|request to \S+ failed",
          ConnectionLostError, "the Colab runtime could not be reached"),
    known(r"upload failed|cannot upload|enoent", RemoteFileError, "cgpu copy failed"),
)


def classify_failure(output: str, step: str = "cgpu") -> GpuferryError | None:
    """The error that cgpu's ``output`` reports, or None when no known message is in it."""
    for message in KNOWN_MESSAGES:
        found = message.pattern.search(output)
        if found:
            line = next((text for text in output.splitlines() if message.pattern.search(text)), found.group(0))
            return message.error(f"{message.cause}: {line.strip()[:300]}", step=step)
    return None
