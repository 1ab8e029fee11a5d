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
    UsageError,
)

#: cgpu prints this when the terminal closed before its exit sentinel: the outcome is unknown.
LOST_EXIT_CODE = "command finished without reporting an exit code"

#: What cgpu 0.1.4 prints when it has no usable session and starts an interactive browser login, which
#: then waits forever: a headless caller stops it as soon as one of these lines arrives.
LOGIN_PROMPTS = re.compile(
    r"Stored session invalid, forcing login|No cached session found\. Starting OAuth login"
    r"|Opened browser for Google login"
)


class LoginRequiredError(NotAuthenticatedError):
    """cgpu has no usable session and wants an interactive browser login: retrying cannot help."""

    kind = "login_required"

    default_hints = (
        "Log in once from an interactive terminal: `cgpu status` (it opens a browser; finish the Google login).",
        "cgpu's OAuth client lives in its config file ($CGPU_CONFIG_DIR/config.json; `cgpu status` in a "
        "terminal walks you through creating it).",
    )


def login_required(output: str, step: str = "cgpu", session_file: str | None = None) -> LoginRequiredError:
    """The error for cgpu's login prompt in ``output`` (the prompt line quoted, never the URL)."""
    line = next((text.strip() for text in output.splitlines() if LOGIN_PROMPTS.search(text)), "login prompt")
    expired = "Stored session invalid" in output
    where = session_file or "$CGPU_CONFIG_DIR/state/session.json"
    return LoginRequiredError(
        ("the cgpu session expired or was revoked and cgpu deleted it" if expired
         else f"cgpu has no stored session ({where})") + f"; cgpu asked for a browser login ({line!r}), "
        "which a background job cannot answer, so the cgpu call was stopped",
        step=step,
        hints=[
            "Log in once from an interactive terminal: `cgpu status` (it opens a browser; finish the Google login).",
            f"Check that the session file exists afterwards: {where}.",
            "Run the job again (or `gpuferry doctor` to check the cgpu stage first).",
        ],
    )


@dataclass(frozen=True)
class KnownMessage:
    pattern: re.Pattern[str]
    error: type[GpuferryError]
    cause: str


def known(pattern: str, error: type[GpuferryError], cause: str) -> KnownMessage:
    return KnownMessage(re.compile(pattern, re.IGNORECASE), error, cause)


#: Checked in order; the first match decides. Matching is case-insensitive (see remote-gpu.md).
KNOWN_MESSAGES: tuple[KnownMessage, ...] = (
    known(r"missing colab oauth credentials", LoginRequiredError, "cgpu has no Colab credentials"),
    known(r"stored session invalid|session expired", NotAuthenticatedError, "the cgpu session expired"),
    known(r"not authenticated", NotAuthenticatedError, "cgpu is not authenticated"),
    known(r"insufficient quota", QuotaError, "Colab quota is used up"),
    known(r"blocked from accessing colab", QuotaError, "the account is blocked from Colab servers"),
    known(r"maximum number of gpu runtimes", QuotaError, "the account already has the maximum number of GPU runtimes"),
    known(r"disconnect other runtimes from", QuotaError,
          "the account already has the maximum number of GPU runtimes (Colab refused another)"),
    known(r"no eligible (gpu )?accelerators|no eligible \w+ accelerators", QuotaError,
          "Colab offers no eligible GPU to this account"),
    known(r"temporarily out of \w+ capacity", QuotaError, "Colab is temporarily out of GPU capacity"),
    known(r"illegal operation on a directory", UsageError,
          "cgpu's -c names its config FILE and was given a folder (set config_file=, or config_dir= for the folder)"),
    known(LOST_EXIT_CODE, ConnectionLostError, "the cgpu terminal closed before the command reported its exit code"),
    known(r"internal_failure", ConnectionLostError, "Google's token endpoint failed (cgpu deleted its session)"),
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
