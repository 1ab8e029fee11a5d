"""Websockets to a Jupyter server (terminals, kernels): token in a header, failures in the error taxonomy."""

from __future__ import annotations

import logging
from urllib.parse import quote, urlsplit, urlunsplit

from websockets.exceptions import InvalidHandshake, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from ..errors import ConnectionLostError, NotAuthenticatedError
from .jupyter_http import JupyterHttp

#: websockets logs handshake headers (the token) at DEBUG: give it a logger that never does.
QUIET_WEBSOCKET_LOGGER = logging.getLogger("gpuferry.backends.jupyter.websocket")
QUIET_WEBSOCKET_LOGGER.setLevel(logging.WARNING)
QUIET_WEBSOCKET_LOGGER.propagate = False


def websocket_url(base_url: str, api_path: str, query: str = "") -> str:
    """The ws:// (wss:// under https) address of ``api_path`` (segments already quoted) on the server."""
    parts = urlsplit(base_url)
    scheme = "wss" if parts.scheme == "https" else "ws"
    return urlunsplit((scheme, parts.netloc, parts.path.rstrip("/") + "/" + api_path.lstrip("/"), query, ""))


def terminal_socket_path(terminal_name: str) -> str:
    return "terminals/websocket/" + quote(terminal_name, safe="")


def open_websocket(http: JupyterHttp, api_path: str, open_timeout: float, what: str,
                   query: str = "") -> ClientConnection:
    """A websocket to ``api_path`` with the server's token; a refusal of the token is NotAuthenticated,
    anything else that keeps it from opening a lost connection (retried like any dropped link)."""
    try:
        return connect(websocket_url(http.base_url, api_path, query), additional_headers=http.auth_headers(),
                       open_timeout=open_timeout, max_size=None, logger=QUIET_WEBSOCKET_LOGGER)
    except InvalidStatus as error:
        status = error.response.status_code
        if status in (401, 403):
            raise NotAuthenticatedError(f"the Jupyter server refused the {what} websocket (HTTP {status})",
                                        step="jupyter") from None
        raise ConnectionLostError(f"{what} websocket refused (HTTP {status})", step="jupyter") from None
    except (OSError, TimeoutError, InvalidHandshake) as error:
        raise ConnectionLostError(f"cannot open the {what} websocket: {type(error).__name__}",
                                  step="jupyter") from None
