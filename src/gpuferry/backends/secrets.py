"""A wrapper that keeps tokens and passphrases out of repr(), str(), logs and error messages."""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import parse_qsl, urlsplit, urlunsplit

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


def as_secret(value: str | Secret | None) -> Secret | None:
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


#: query parameters that carry a credential (Jupyter prints ``/lab?token=...``; proxies add others)
SECRET_QUERY_KEYS = frozenset({"token", "access_token", "auth", "key", "api_key", "apikey", "password", "secret"})
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>]+")


def url_secrets(url: str) -> list[str]:
    """The credentials a URL holds: a user-info password (or a bare user-info token), secret query values."""
    parts = urlsplit(url)
    found = []
    if parts.password:
        found.append(parts.password)
    elif parts.username and "@" in parts.netloc:
        found.append(parts.username)  # http://TOKEN@host: a bare user-info is a credential too
    found += [value for key, value in parse_qsl(parts.query, keep_blank_values=False)
              if key.lower() in SECRET_QUERY_KEYS and value]
    return found


def split_url_secret(url: str) -> tuple[str, str | None]:
    """``url`` without user-info, query and fragment, and the token it carried (None when it held none).

    ``http://host:8888/lab?token=T`` gives ``("http://host:8888/", "T")``: the server's base URL is the
    part before ``/lab`` or ``/tree`` (the pages Jupyter prints links to).
    """
    parts = urlsplit(url)
    query = {key.lower(): value for key, value in parse_qsl(parts.query)}
    token = query.get("token") or parts.password or (parts.username if "@" in parts.netloc else None)
    path = parts.path
    for page in ("/lab/", "/tree/", "/notebooks/"):
        found = (path + "/").find(page)
        if found >= 0:
            path = path[:found] + "/"
            break
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = host + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, path, "", "")), token or None


def redact_url(url: str) -> str:
    """``url`` with every credential it holds masked (safe for messages, logs and stored settings)."""
    return redact(url, url_secrets(url))


def redact_urls(text: str) -> str:
    """``text`` with the credentials of every URL in it masked."""
    def masked(match: re.Match[str]) -> str:
        url = match.group(0)
        bare = url.rstrip(".,;:)]}")
        return redact_url(bare) + url[len(bare):]

    return _URL.sub(masked, text)
