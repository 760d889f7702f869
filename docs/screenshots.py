"""Take the console's screenshots for the docs (docs/images/console-*.png).

Runs an engine with a few sample workflows on a temporary SQLite journal,
serves the console beside it (uvicorn, on the same loop), and photographs
the executions list, an execution page and the cluster page in Debian's
chromium through Playwright:

    python docs/screenshots.py [--out docs/images]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import socket
import tempfile
from pathlib import Path
from typing import Any

import uvicorn
from playwright.async_api import async_playwright

from tukio import Engine, WorkflowTemplate, register
from tukio.store import SQLiteStore
from tukio.web import create_app

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
GATE = asyncio.Event()


@register("validate-order")
async def validate(event: Any) -> dict[str, Any]:
    return {"order": event.data["order"], "items": 3, "valid": True}


@register("reserve-stock")
async def reserve(event: Any) -> dict[str, Any]:
    await asyncio.sleep(0.05)
    return {"reserved": event.data["items"]}


@register("charge-card")
async def charge(event: Any) -> dict[str, Any]:
    await asyncio.sleep(0.12)
    return {"charged": 59.9, "currency": "EUR"}


@register("write-invoice")
async def invoice(event: Any) -> dict[str, Any]:
    return {"invoice": "INV-2026-0042"}


@register("ship-parcel")
async def ship(event: Any) -> dict[str, Any]:
    await GATE.wait()
    return {"tracking": "1Z999"}


@register("notify-customer")
async def notify(event: Any) -> None:
    return None


@register("build-report")
async def report(event: Any) -> None:
    raise ConnectionError("warehouse API timed out after 30 s")


ORDER = WorkflowTemplate.from_dict({
    "id": "order-fulfilment",
    "tasks": [
        {"id": "validate", "name": "validate-order"},
        {"id": "reserve", "name": "reserve-stock"},
        {"id": "charge", "name": "charge-card"},
        {"id": "invoice", "name": "write-invoice"},
        {"id": "ship", "name": "ship-parcel"},
        {"id": "notify", "name": "notify-customer"},
    ],
    "graph": {"validate": ["reserve", "charge"], "charge": ["invoice", "ship"], "ship": ["notify"]},
    "policy": "start-new",
})
REPORT = WorkflowTemplate.from_dict({
    "id": "nightly-report",
    "tasks": [{"id": "collect", "name": "validate-order"}, {"id": "build", "name": "build-report"}],
    "graph": {"collect": ["build"]},
    "policy": "start-new",
})


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def photograph(out: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        store = SQLiteStore(Path(tmp) / "journal.db")
        engine = Engine(store=store, node="node-a")
        for template in (ORDER, REPORT):
            await engine.load(template)
        GATE.set()
        for n in range(4):
            await (await engine.run_once(ORDER, {"order": f"A-10{n}"}))
        await asyncio.wait([await engine.run_once(REPORT, {"order": "nightly"})])
        GATE.clear()
        running = await engine.run_once(ORDER, {"order": "A-107"})
        await asyncio.sleep(0.4)  # its first tasks end; 'ship' waits
        await engine.flush()
        port = free_port()
        server = uvicorn.Server(uvicorn.Config(create_app(store, engine=engine), port=port, log_level="warning"))
        serving = asyncio.create_task(server.serve())
        while not server.started:
            await asyncio.sleep(0.05)
        base = f"http://127.0.0.1:{port}"
        try:
            async with async_playwright() as playwright:
                browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
                page = await browser.new_page(viewport={"width": 1180, "height": 560})
                await page.goto(base + "/")
                await page.wait_for_selector(f'tr[data-id="{running.uid}"]')
                await page.screenshot(path=out / "console-list.png")
                await page.set_viewport_size({"width": 1180, "height": 700})
                await page.goto(f"{base}/executions/{running.uid}")
                await page.wait_for_selector('[data-task="ship"][data-state="pending"]')
                await page.click('[data-task="charge"]')
                await page.wait_for_selector(".task-panel h2")
                await page.screenshot(path=out / "console-execution.png")
                await page.set_viewport_size({"width": 1180, "height": 300})
                await page.goto(f"{base}/cluster")
                await page.wait_for_selector('tr[data-node="node-a"]')
                await page.screenshot(path=out / "console-cluster.png")
                await browser.close()
        finally:
            server.should_exit = True
            await serving
            GATE.set()
            await engine.stop(force=True)
            with contextlib.suppress(Exception):
                store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("images"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    logging.getLogger("tukio").setLevel(logging.CRITICAL)  # the sample failure is expected
    asyncio.run(photograph(args.out))
    for name in ("list", "execution", "cluster"):
        path = args.out / f"console-{name}.png"
        print(f"{path}: {path.stat().st_size // 1024} KB")


if __name__ == "__main__":
    main()
