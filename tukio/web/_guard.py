"""Who may call the API: the bearer token, and no cross-site actions."""

from __future__ import annotations

import hmac
from urllib.parse import urlsplit

from starlette.requests import Request

__all__ = ["ACTION_HEADER", "refusal"]

#: The header the console sends with its actions: a cross-site page cannot set it without a CORS
#: preflight, which this server never grants.
ACTION_HEADER = "X-Tukio-Action"
_SAME_SITE = frozenset({"same-origin", "none"})


def _authorized(request: Request, token: str) -> bool:
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode())


def _cross_site(request: Request) -> str | None:
    fetch_site = request.headers.get("sec-fetch-site")
    if fetch_site is not None and fetch_site not in _SAME_SITE:
        return f"a {fetch_site} request (Sec-Fetch-Site)"
    match request.headers.get("origin"):
        case None:
            return None
        case "null":
            return "a request from an opaque origin"
        case origin if urlsplit(origin).netloc != request.headers.get("host"):
            return f"a request from another origin ({origin})"
    return None


def refusal(request: Request, token: str | None, action: bool) -> tuple[int, str] | None:
    """Say why `request` is refused (its HTTP status and the reason), or None when it may go on.

    Args:
        request: an API request.
        token: the bearer token every API request must carry, or None.
        action: the request changes something (a POST): it must not come
            from another site, and carries `ACTION_HEADER` or the token.

    Returns:
        (401 or 403, why), or None.
    """
    authorized = token is not None and _authorized(request, token)
    if token is not None and not authorized:
        return 401, "missing or wrong bearer token (Authorization: Bearer ...)"
    if action:
        why = _cross_site(request)
        if why is not None:
            return 403, f"cross-site action refused: {why}"
        if not authorized and ACTION_HEADER.lower() not in request.headers:
            return 403, f"an action needs the {ACTION_HEADER} header (or the bearer token)"
    return None
