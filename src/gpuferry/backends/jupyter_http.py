"""HTTP to a Jupyter server: token auth in a header, and HTTP failures mapped to the error taxonomy."""

from __future__ import annotations

from typing import Any

import httpx

from ..errors import ConnectionLostError, GpuferryError, NotAuthenticatedError, NotInstalledError, RemoteFileError
from .secrets import Secret, redact


class JupyterHttp:
    """A small httpx client bound to one server; never puts the token in a URL, log or message."""

    def __init__(self, base_url: str, token: Secret, timeout: float, verify: bool = True) -> None:
        self.base_url = base_url.rstrip("/") + "/"
        self._token = token
        self._client = httpx.Client(
            base_url=self.base_url,
            headers={"Authorization": f"token {token.reveal()}"},
            timeout=httpx.Timeout(timeout),
            verify=verify,
            follow_redirects=False,
        )

    def __repr__(self) -> str:
        return f"JupyterHttp(base_url={self.base_url!r})"

    def auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"token {self._token.reveal()}"}

    def request(
        self, method: str, path: str, *, what: str, remote_path: str | None = None, **kwargs: Any
    ) -> httpx.Response:
        try:
            response = self._client.request(method, path, **kwargs)
        except httpx.TransportError as error:
            message = redact(f"{type(error).__name__}: {error}", [self._token])
            raise ConnectionLostError(f"{what}: cannot reach {self.base_url}: {message}", step="jupyter") from None
        if response.status_code < 400:
            return response
        raise self.error_for(response, what, remote_path)

    def ranged_get(self, path: str, offset: int, length: int | None, *, what: str) -> bytes | None:
        """Bytes ``offset`` .. ``offset + length`` of a GET, raw on the wire; None when the server does not
        answer the range (a handler without Range support would send the whole file: it is never read),
        b"" at or past the end of the file."""
        end = "" if length is None else str(offset + length - 1)
        try:
            with self._client.stream("GET", path, headers={"Range": f"bytes={offset}-{end}"}) as response:
                if response.status_code == 416:
                    return b""
                if not self._answers_range(response, offset, length):
                    return None
                return response.read()
        except httpx.TransportError as error:
            message = redact(f"{type(error).__name__}: {error}", [self._token])
            raise ConnectionLostError(f"{what}: cannot reach {self.base_url}: {message}", step="jupyter") from None

    @staticmethod
    def _answers_range(response: httpx.Response, offset: int, length: int | None) -> bool:
        """206 for the range asked; or 200 for a whole file that fits it (a range covering the whole
        file is answered that way), known from its Content-Length before any byte is read."""
        if response.status_code == 206:
            return response.headers.get("Content-Range", "").startswith(f"bytes {offset}-")
        if response.status_code == 200 and offset == 0:
            size = response.headers.get("Content-Length", "")
            return size.isdigit() and (length is None or int(size) <= length)
        return False

    def error_for(self, response: httpx.Response, what: str, remote_path: str | None) -> GpuferryError:
        status = response.status_code
        try:
            detail = str(response.json().get("message") or response.json().get("reason") or "")
        except ValueError:
            detail = response.text[:200]
        detail = redact(detail, [self._token])
        if status in (401, 403):
            return NotAuthenticatedError(
                f"{what}: the Jupyter server at {self.base_url} refused the token (HTTP {status})",
                step="jupyter",
                hints=["Check the token (copy it again from the server's URL or `jupyter server list`).",
                       "Tokens change when the server restarts."],
            )
        if status == 404 and remote_path is None:
            return NotInstalledError(f"{what}: {self.base_url} has no such API (HTTP 404): {detail}", step="jupyter")
        if status in (400, 404, 409, 500) and remote_path is not None:
            return RemoteFileError(f"{what} failed (HTTP {status}): {detail}", path=remote_path, step="jupyter")
        return ConnectionLostError(f"{what} failed (HTTP {status}): {detail}", step="jupyter")

    def close(self) -> None:
        self._client.close()
