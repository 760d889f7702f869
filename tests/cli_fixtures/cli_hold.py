"""Tasks for the command-line tests run in subprocesses (names unique to this file)."""

import asyncio

from tukio import register


@register("cli-fixture-hold")
async def hold(event):
    """Wait until cancelled."""
    await asyncio.Event().wait()


@register("cli-fixture-start")
async def start(event):
    """Pass the data on."""
    return event.data
