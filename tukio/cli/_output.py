"""The standard output of a command: closed by its reader, and shared with running tasks.

A command whose reader goes away (``tukio show m | head -1``) ends quietly
with exit code 141 (``EXIT_BROKEN_PIPE``), as git does. While a workflow runs, `LiveOutput`
stands for ``sys.stdout`` so that each live line comes out before what the
task it announces prints.
"""

from __future__ import annotations

import asyncio
import io
import os
import sys
from collections.abc import Callable
from typing import TextIO

__all__ = ["LiveOutput", "silence_stdout"]


def silence_stdout(stream: TextIO | None = None) -> None:
    """Point the standard output's file at ``os.devnull``, so that nothing written later fails.

    Python flushes ``sys.stdout`` once more at exit: without this, that flush
    would fail on the closed pipe too and print "Exception ignored" (see
    the note on SIGPIPE in the documentation of the `signal` module).

    Args:
        stream: the stream whose reader is gone (``sys.stdout`` when None).
    """
    try:
        fd = (stream if stream is not None else sys.stdout).fileno()
    except (OSError, ValueError):  # no file behind it (captured in memory, closed)
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, fd)
    finally:
        os.close(devnull)


class LiveOutput(io.TextIOBase):
    """``sys.stdout`` while a workflow runs: live lines first, the tasks' own output next.

    A task's live 'begin' line is printed by a broker handler, which the loop
    calls just after the task's first step. So `write` (what the tasks print)
    holds its text and writes it one loop turn later, while `line` (the live
    lines) writes at once: each live line comes out ahead of the output of the
    step it announces, and after the output of the steps before it.

    Args:
        stream: the real standard output.
        loop: the running loop.
        reader_gone: called once when the stream's reader has closed it
            (``| head``); everything is dropped from then on.
    """

    def __init__(self, stream: TextIO, loop: asyncio.AbstractEventLoop, reader_gone: Callable[[], None]) -> None:
        super().__init__()
        self._stream = stream
        self._loop = loop
        self._reader_gone = reader_gone
        self._held: list[str] = []
        self._scheduled = False
        self.broken = False

    @property
    def encoding(self) -> str:  # type: ignore[override]
        """The encoding of the real standard output."""
        return self._stream.encoding

    def writable(self) -> bool:
        """True: tasks may print."""
        return True

    def isatty(self) -> bool:
        """Whether the real standard output is a terminal."""
        return self._stream.isatty()

    def fileno(self) -> int:
        """The file descriptor of the real standard output (for subprocesses)."""
        return self._stream.fileno()

    def write(self, text: str) -> int:
        """Hold `text` (a task's output) and write it on the next loop turn."""
        if not self.broken and text:
            self._held.append(text)
            if not self._scheduled:
                self._scheduled = True
                # Thread-safe: a task may print from an executor thread.
                self._loop.call_soon_threadsafe(self.release)
        return len(text)

    def flush(self) -> None:
        """Nothing to do: held text is flushed when it is released."""

    def line(self, text: str) -> None:
        """Write a live line now."""
        self._out(text + "\n")

    def release(self) -> None:
        """Write the held text now."""
        self._scheduled = False
        if self._held:
            text = "".join(self._held)
            self._held.clear()
            self._out(text)

    def _out(self, text: str) -> None:
        if self.broken:
            return
        try:
            self._stream.write(text)
            self._stream.flush()
        except BrokenPipeError:
            self.broken = True
            self._held.clear()
            silence_stdout(self._stream)
            self._reader_gone()
