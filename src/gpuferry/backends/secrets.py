"""A wrapper that keeps tokens and passphrases out of repr(), str(), logs and error messages."""

from __future__ import annotations

from typing import Iterable

MASK = "***"


class Secret:
    """Holds a secret string; only ``reveal()`` gives it back, every other rendering is masked."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = str(value)

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return f"Secret({MASK})"

    def __str__(self) -> str:
        return MASK

    def __bool__(self) -> bool:
        return bool(self._value)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __reduce__(self) -> tuple:
        raise TypeError("a Secret is not picklable")


def as_secret(value: "str | Secret | None") -> Secret | None:
    if value is None or isinstance(value, Secret):
        return value
    return Secret(value)


def redact(text: str, secrets: Iterable[Secret | str | None]) -> str:
    """``text`` with every non-empty secret value replaced by the mask."""
    for secret in secrets:
        value = secret.reveal() if isinstance(secret, Secret) else secret
        if value:
            text = text.replace(value, MASK)
    return text
