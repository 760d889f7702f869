"""The documents keep their promises: examples run, the API reference misses no name.

The site itself is checked by `mkdocs build --strict` in CI (broken links,
unknown references); these tests check what a build cannot see.
"""

from __future__ import annotations

import importlib
import re
import subprocess
import sys
from pathlib import Path

import pytest

import tukio

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"

# Each import path of tukio 1.1.2 (and the other public modules) and its reference page.
REFERENCE_PAGES = {
    "tukio.engine": "engine.md",
    "tukio.task": "task.md",
    "tukio.task.factory": "task-factory.md",
    "tukio.workflow": "workflow.md",
    "tukio.broker": "broker.md",
    "tukio.event": "event.md",
    "tukio.dag": "dag.md",
    "tukio.utils": "utils.md",
    "tukio.store": "store.md",
    "tukio.flow": "flow.md",
    "tukio.graph": "graph.md",
    "tukio.report_json": "report-json.md",
    "tukio.schema": "schema.md",
    "tukio.manage": "manage.md",
}


def python_block(text: str, after: str) -> str:
    """Return the first ```python block of `text` that follows the text `after`."""
    match = re.search(re.escape(after) + r".*?```python\n(.*?)```", text, re.S)
    assert match, f"no python block after {after!r}"
    return match.group(1)


def run_python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-W", "error", "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=ROOT,
    )


def test_every_name_of_tukio_is_in_the_reference_index() -> None:
    page = (DOCS / "reference" / "tukio.md").read_text(encoding="utf-8")
    missing = [name for name in tukio.__all__ if f"`{name}`" not in page]
    assert missing == []


@pytest.mark.parametrize(("module_name", "page_name"), sorted(REFERENCE_PAGES.items()))
def test_every_public_name_of_a_module_is_on_its_page(module_name: str, page_name: str) -> None:
    page = (DOCS / "reference" / page_name).read_text(encoding="utf-8")
    assert f"::: {module_name}\n" in page
    if "members:" not in page:
        return  # mkdocstrings renders the whole of __all__
    module = importlib.import_module(module_name)
    missing = [name for name in module.__all__ if not re.search(rf"(- {name}$|`{name}`)", page, re.M)]
    assert missing == []


def test_every_error_class_is_on_the_errors_page() -> None:
    page = (DOCS / "reference" / "errors.md").read_text(encoding="utf-8")
    errors = importlib.import_module("tukio.errors")
    classes = [
        name
        for name, value in vars(errors).items()
        if isinstance(value, type) and issubclass(value, errors.TukioError) and not name.startswith("_")
    ]
    assert "TemplateError" in classes
    assert [name for name in classes if f"- {name}\n" not in page] == []


def test_every_page_is_in_the_navigation() -> None:
    nav = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    pages = sorted(str(p.relative_to(DOCS)) for p in DOCS.rglob("*.md"))
    assert [p for p in pages if f" {p}\n" not in nav] == []


@pytest.mark.parametrize("document", ["README.md", "docs/index.md"])
def test_the_example_runs_and_prints_what_the_text_says(document: str) -> None:
    text = (ROOT / document).read_text(encoding="utf-8")
    out = run_python(python_block(text, "## Example"))
    assert out.returncode == 0, out.stderr
    assert out.stdout == "order 42: 3 items\n"
    assert "It prints `order 42: 3 items`" in text


def test_the_legacy_loop_style_runs_without_warnings() -> None:
    snippet = python_block((DOCS / "migrating.md").read_text(encoding="utf-8"), "engine, still works")
    code = (
        "import asyncio, tukio\n"
        "@tukio.register('legacy-hello')\n"
        "async def hello(event):\n"
        "    print('hello', event.data['k'])\n"
        "template = {'tasks': [{'id': 't', 'name': 'legacy-hello'}]}\n" + snippet
    )
    out = run_python(code)
    assert out.returncode == 0, out.stderr
    assert out.stdout == "hello 1\n"
    assert out.stderr == ""


def test_the_readme_gives_the_two_set_up_commands_ci_runs() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    venv = "python3 -m venv .venv && . .venv/bin/activate && "
    assert venv + "pip install -e . && python examples/readme_example.py\n" in readme
    assert venv + "pip install -r requirements-dev.txt -e . && python -m pytest\n" in readme
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert "pip install -q -r requirements-dev.txt -e ." in ci
    assert "python -m pytest\n" in ci
    assert 'mkdocs build --strict --site-dir "$work/site"' in ci


def test_the_readme_links_to_pages_that_exist() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    targets = re.findall(r"\]\(((?:docs/|CONTRIBUTING)[^)#]*)", readme)
    assert "docs/graph.png" in targets
    assert [t for t in targets if not (ROOT / t).exists()] == []


def test_the_site_highlights_code_without_a_cdn() -> None:
    """The mkdocs theme's highlight.js comes from cdnjs: off; pygments colours code at build time."""
    config = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    assert "\n  highlightjs: false\n" in config
    assert "use_pygments: true" in config
    assert "  - css/pygments.css\n" in config
    assert ".highlight .k " in (DOCS / "css" / "pygments.css").read_text(encoding="utf-8")
