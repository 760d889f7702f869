"""A TCP proxy that misbehaves on request: the fault suite puts it between one node and the database.

    python chaos_proxy.py TARGET_PORT

Listens on a free port of 127.0.0.1, prints ``PORT n``, then forwards every
connection to 127.0.0.1:TARGET_PORT and obeys one command per line of its
standard input (it exits when its input ends):

- ``pass``: forward at once (the default);
- ``latency S``: forward each chunk S seconds late;
- ``drop``: forward nothing (a black hole: connections stay open, silent);
- ``reset``: close every open connection abruptly (an RST), then ``pass``;
- ``cut``: swallow the next answer of the server and close that connection
  (the client never learns whether its last statement committed).

The tests may run a `Proxy` on their own loop instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import sys


class Proxy:
    """Forwards 127.0.0.1:`port` to 127.0.0.1:`target`, with faults on request.

    Args:
        target: the port of the server behind the proxy.
    """

    def __init__(self, target: int) -> None:
        self.target = target
        self.port = 0
        self.latency = 0.0
        self.dropping = False
        self._cut_next = False
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._flowing = asyncio.Event()
        self._flowing.set()

    async def start(self) -> int:
        """Listen on a free port; return it."""
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    def obey(self, command: str) -> None:
        """Apply one command (see the module's docstring).

        Raises:
            ValueError: an unknown command.
        """
        word, *rest = command.split() or [""]
        if word == "pass":
            self.latency, self.dropping = 0.0, False
            self._flowing.set()
        elif word == "latency" and len(rest) == 1:
            self.latency = float(rest[0])
        elif word == "drop":
            self.dropping = True
            self._flowing.clear()
        elif word == "reset":
            self.reset()
            self.obey("pass")
        elif word == "cut":
            self._cut_next = True
        else:
            raise ValueError(f"unknown proxy command {command!r}")

    def reset(self) -> None:
        """Close every open connection abruptly (SO_LINGER 0: the peers get an RST)."""
        for writer in list(self._writers):
            sock = writer.get_extra_info("socket")
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()
        self._writers.clear()

    async def close(self) -> None:
        """Stop listening and close every connection."""
        self.reset()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            server_r, server_w = await asyncio.open_connection("127.0.0.1", self.target)
        except OSError:
            client_w.transport.abort()
            return
        self._writers.update((client_w, server_w))
        pair = (client_w, server_w)
        await asyncio.gather(
            self._pump(client_r, server_w, pair, answers=False),
            self._pump(server_r, client_w, pair, answers=True),
        )

    async def _pump(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        pair: tuple[asyncio.StreamWriter, asyncio.StreamWriter],
        *,
        answers: bool,
    ) -> None:
        try:
            while chunk := await reader.read(65536):
                await self._flowing.wait()
                if self.latency:
                    await asyncio.sleep(self.latency)
                if answers and self._cut_next:
                    self._cut_next = False
                    break
                writer.write(chunk)
                await writer.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        for end in pair:
            end.transport.abort()
            self._writers.discard(end)


async def _main(target: int) -> None:
    proxy = Proxy(target)
    port = await proxy.start()
    sys.stdout.write(f"PORT {port}\n")
    sys.stdout.flush()
    loop = asyncio.get_running_loop()
    while line := await loop.run_in_executor(None, sys.stdin.readline):
        proxy.obey(line.strip())
    await proxy.close()


if __name__ == "__main__":
    asyncio.run(_main(int(sys.argv[1])))
