"""The console in a real browser (Playwright driving chromium) against ``tukio serve`` and a running engine."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from browser import CHROMIUM, CHROMIUM_ARGS, need_browser, serve, serving
from support import chain

from tukio import Engine, WorkflowTemplate
from tukio.store import SQLiteStore

# One loop for the module: the browser is shared by its tests, and the engine runs beside it.
pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.slow, pytest.mark.browser]
#: Milliseconds the console has to show a change (it polls every second).
SHOWN = 15_000
#: What a finished task's box is filled with (style.css: --finished).
GREEN = "rgb(46, 157, 79)"


@pytest.fixture(scope="module")
def journal(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("console") / "journal.db"
    SQLiteStore(path).close()  # made before the server opens it
    return path


@pytest.fixture(scope="module")
def server(journal: Path) -> Iterator[str]:
    need_browser()
    yield from serve(journal)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def browser(server: str) -> AsyncIterator[Any]:
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield launched
        await launched.close()


@pytest_asyncio.fixture(loop_scope="module")
async def page(browser: Any) -> AsyncIterator[Any]:
    context = await browser.new_context(viewport={"width": 1200, "height": 800})
    opened = await context.new_page()
    yield opened
    await context.close()


@pytest_asyncio.fixture(loop_scope="module")
async def engine(journal: Path) -> AsyncIterator[Engine]:
    store = SQLiteStore(journal)
    made = Engine(store=store, lease=0.6)
    yield made
    await asyncio.wait_for(made.stop(force=True), 10)
    store.close()


@pytest.fixture
def gate() -> asyncio.Event:
    return asyncio.Event()


@pytest.fixture
def tasks(registered: Callable[..., Any], task_name: Callable[[str], str], gate: asyncio.Event) -> dict[str, str]:
    """'gated' (ends once the test opens the gate), 'double', 'park' (runs until cancelled)."""

    async def gated(event: Any) -> dict[str, int]:
        await gate.wait()
        return {"n": event.data["n"]}

    async def double(event: Any) -> dict[str, int]:
        return {"n": event.data["n"] * 2}

    async def park(event: Any) -> None:
        await asyncio.Event().wait()

    names = {key: task_name(key) for key in ("gated", "double", "park")}
    for key, fn in (("gated", gated), ("double", double), ("park", park)):
        registered(names[key], fn)
    return names


async def start(engine: Engine, template: WorkflowTemplate) -> str:
    """Start `template` with ``{"n": 3}`` and commit its beginning; return the execution id."""
    await engine.load(template)
    workflow = await engine.run_once(template, {"n": 3})
    assert workflow is not None
    await engine.flush()
    return workflow.uid


async def fill(page: Any, task_id: str) -> str:
    return str(await page.eval_on_selector(f'[data-task="{task_id}"] rect', "r => getComputedStyle(r).fill"))


async def test_the_list_shows_a_running_execution_and_its_page_turns_green(
    page: Any, server: str, engine: Engine, tasks: dict[str, str], gate: asyncio.Event
) -> None:
    exec_id = await start(engine, chain("console-gated", tasks["gated"], tasks["double"]))
    await page.goto(server + "/")
    row = page.locator(f'tr[data-id="{exec_id}"]')
    await row.locator('.badge[data-state="pending"]').wait_for(timeout=SHOWN)
    assert "console-gated" in await row.inner_text()
    await row.locator("a").click()
    await page.wait_for_selector('[data-task="t1"][data-state="pending"]', timeout=SHOWN)
    assert await page.locator('[data-task="t2"]').get_attribute("data-state") == "none"
    gate.set()
    await page.wait_for_selector('[data-task="t1"][data-state="finished"]', timeout=SHOWN)
    await page.wait_for_selector('[data-task="t2"][data-state="finished"]', timeout=SHOWN)
    assert await fill(page, "t1") == GREEN
    assert await page.locator('h1 .badge[data-state="finished"]').count() == 1
    await page.locator('[data-task="t2"]').click()
    assert '"n": 6' in await page.locator(".task-panel").inner_text()


async def test_cancel_resume_then_retry_from_a_task(
    page: Any, server: str, engine: Engine, tasks: dict[str, str]
) -> None:
    exec_id = await start(engine, chain("console-park", tasks["double"], tasks["park"]))
    await page.goto(f"{server}/executions/{exec_id}")
    await page.wait_for_selector('[data-task="t2"][data-state="pending"]', timeout=SHOWN)
    await page.click("#cancel")
    await page.click("#confirm-ok")  # the confirmation
    await page.wait_for_selector('h1 .badge[data-state="cancelled"]', timeout=SHOWN)
    await page.click("#resume")
    assert "Resume execution" in await page.locator("#confirm-text").inner_text()
    await page.click("#confirm-ok")
    # Resumed under its id: the engine claims it again and runs t2 again (t1 kept).
    await page.wait_for_selector('h1 .badge[data-state="pending"]', timeout=SHOWN)
    await page.wait_for_selector('[data-task="t2"][data-state="pending"]', timeout=SHOWN)
    await page.click("#cancel")
    await page.click("#confirm-ok")
    await page.wait_for_selector('h1 .badge[data-state="cancelled"]', timeout=SHOWN)
    await page.locator('[data-task="t2"]').click()
    await page.click("#retry-from")
    assert "Retry from task t2?" in await page.locator("#confirm-text").inner_text()
    await page.click("#confirm-ok")
    await page.wait_for_url(lambda url: "/executions/" in url and exec_id not in url, timeout=SHOWN)
    # The new execution kept t1's outputs; the engine took it over and runs t2 again.
    await page.wait_for_selector('[data-task="t2"][data-state="pending"]', timeout=SHOWN)
    assert await page.locator('[data-task="t1"]').get_attribute("data-state") == "finished"
    new_id = page.url.rsplit("/", 1)[1]
    assert new_id != exec_id
    await page.click("#cancel")
    await page.click("#confirm-ok")
    await page.wait_for_selector('h1 .badge[data-state="cancelled"]', timeout=SHOWN)


async def test_a_refused_confirmation_does_nothing_and_the_cluster_page(
    page: Any, server: str, engine: Engine, tasks: dict[str, str]
) -> None:
    exec_id = await start(engine, chain("console-keep", tasks["park"]))
    await page.goto(f"{server}/executions/{exec_id}")
    await page.wait_for_selector('[data-task="t1"][data-state="pending"]', timeout=SHOWN)
    await page.click("#cancel")
    await page.click("#confirm button[value=cancel]")
    await page.goto(f"{server}/cluster")
    node = page.locator(f'tr[data-node="{engine.node}"]')
    await node.wait_for(timeout=SHOWN)
    assert "alive" in await node.inner_text()
    assert await page.locator('[data-state="cancelled"]').count() == 0
    [workflow] = [w for w in engine.instances if w.uid == exec_id]
    assert not workflow.done()  # the refused confirmation sent nothing


async def test_a_server_with_a_token_asks_for_it_once(page: Any, journal: Path) -> None:
    with serving(journal, "--token", "console-secret") as base:
        await page.goto(base + "/")
        login = page.locator("#login")
        await login.wait_for(timeout=SHOWN)  # the list's first request was refused: the console asks
        await page.fill("#login-token", "wrong")
        await page.press("#login-token", "Enter")
        await page.wait_for_selector("#login[open]", timeout=SHOWN)  # asked again
        await page.fill("#login-token", "console-secret")
        await page.press("#login-token", "Enter")
        await page.locator("#status", has_text="live").wait_for(timeout=SHOWN)  # the list was read
        await page.goto(base + "/cluster")  # kept for the tab: not asked again
        await page.locator("#status", has_text="live").wait_for(timeout=SHOWN)
        assert not await login.is_visible()
