"""Finding the event loop without deprecated calls."""

from __future__ import annotations

import asyncio
import warnings


def resolve_loop(loop: asyncio.AbstractEventLoop | None) -> asyncio.AbstractEventLoop:
    """Return `loop`, else the running loop, else the current loop (legacy code).

    The last case serves code written for the original tukio, which built an
    engine before running its loop; Python warns about it, so we silence that
    one warning here instead of in every caller.
    """
    if loop is not None:
        return loop
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        pass
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return asyncio.get_event_loop_policy().get_event_loop()
