"""``tukio serve --store S``: the web console and JSON API of a store (the `tukio[web]` extra)."""

from __future__ import annotations

import argparse
import ipaddress
import os
from typing import Any

from tukio.cli._common import EXIT_BAD_INPUT, EXIT_OK, InputError, add_command
from tukio.cli._store import add_store_options, open_store

__all__ = ["add_parser", "check_exposure", "run"]

#: The environment variable that gives the token when ``--token`` does not.
TOKEN_ENV = "TUKIO_SERVE_TOKEN"


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``serve`` command."""
    parser = add_command(
        subparsers,
        "serve",
        "serve the web console and JSON API of a store",
        (
            "Serve the executions of the store: a web console at /, a JSON API under /api/ (described at "
            "/api/openapi.json) and Prometheus text at /metrics, until interrupted. Bound to 127.0.0.1 "
            f"by default; any other address needs a --token (or ${TOKEN_ENV}), which every API request "
            "then carries as 'Authorization: Bearer TOKEN'. Needs the web extra: pip install 'tukio[web]'."
        ),
        {EXIT_OK: "stopped (interrupted)", EXIT_BAD_INPUT: "bad input: missing store, exposed without a token"},
    )
    add_store_options(parser)
    parser.add_argument("--host", default="127.0.0.1", help="the address to listen on (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8080, help="the port to listen on (default: 8080)")
    parser.add_argument("--token", help=f"the bearer token the API requires (default: ${TOKEN_ENV})")
    parser.set_defaults(command=run)


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_exposure(host: str, token: str | None) -> None:
    """Refuse to serve on an address other machines reach without a token.

    Raises:
        InputError: `host` is not a loopback address and there is no token.
    """
    if token is None and not _loopback(host):
        raise InputError(
            f"refusing to serve on {host} without a token: anyone who reaches it could cancel executions",
            [f"give --token TOKEN (or set {TOKEN_ENV}), or serve on 127.0.0.1 behind your own proxy"],
        )


def run(args: Any) -> int:
    """Serve until interrupted."""
    token = args.token or os.environ.get(TOKEN_ENV) or None
    check_exposure(args.host, token)
    if not 0 <= args.port <= 65535:
        raise InputError(f"--port {args.port}: not a port number")
    try:
        import uvicorn

        from tukio.web import create_app
    except ImportError as exc:
        raise InputError(f"tukio serve needs the web extra: pip install 'tukio[web]' ({exc})") from None
    store = open_store(args)
    try:
        app = create_app(store, token)
        where = f"[{args.host}]" if ":" in args.host else args.host  # an IPv6 address in a URL
        print(f"tukio: serving {args.store} on http://{where}:{args.port}/", flush=True)
        uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    finally:
        store.close()
    return EXIT_OK
