"""``tukio recover MODULE WORKFLOW.json --store S``: finish what a crashed ``tukio run`` left."""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

from tukio.cli._common import (
    EXIT_BAD_INPUT,
    EXIT_FAILED,
    EXIT_MEANINGS,
    EXIT_OK,
    add_command,
    check_runnable,
    import_module,
    load_template,
)
from tukio.cli._store import add_store_options, open_store, run_sync
from tukio.cli.run import failure, summary
from tukio.engine import Engine
from tukio.store.base import Store
from tukio.workflow.template import WorkflowTemplate

__all__ = ["add_parser", "recover", "run"]


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``recover`` command."""
    parser = add_command(
        subparsers,
        "recover",
        "resume the unfinished executions of a workflow left in a store",
        (
            "Import MODULE (which registers the tasks), load WORKFLOW, and resume the unfinished "
            "executions of it that the store holds and no live process runs (a 'tukio run --store' "
            "killed mid-way, a node that died, an execution resumed or retried with 'tukio executions'). "
            "Tasks recorded as done are not run again. Prints the summary of each one, as 'tukio run' does."
        ),
        {
            EXIT_OK: "every execution resumed ended well (or there was none)",
            EXIT_FAILED: EXIT_MEANINGS[EXIT_FAILED],
            EXIT_BAD_INPUT: EXIT_MEANINGS[EXIT_BAD_INPUT] + ", missing store",
        },
    )
    parser.add_argument("module", metavar="MODULE", help="a dotted module name or the path of a .py file")
    parser.add_argument("workflow", metavar="WORKFLOW", help="the workflow template JSON file")
    add_store_options(parser)
    parser.set_defaults(command=run)


async def recover(template: WorkflowTemplate, store: Store) -> list[dict[str, Any]]:
    """Resume the unfinished executions of `template` in `store` on a new engine; return their reports.

    Executions of other templates are left alone (listed on stderr).
    """
    engine = Engine(store=store)
    try:
        await engine.load(template)
        workflows = await engine.recover()
        others = [i for i in engine.unrecovered if i.template_id != template.uid]
        if others:
            print(f"{len(others)} unfinished execution(s) of other workflows left in the store", file=sys.stderr)
        for info in engine.unrecovered:
            if info.template_id == template.uid:
                print(f"tukio: {info.exec_id} not recovered: {info.problem}", file=sys.stderr)
        if workflows:
            await asyncio.wait(workflows)
        await engine.flush()
        return [w.report() for w in workflows]
    finally:
        engine.stop(force=True)
        await engine


def run(args: Any) -> int:
    """Resume, wait, and print a summary of each execution resumed."""
    import_module(args.module)
    template = load_template(args.workflow)
    check_runnable(template, args.workflow)
    with open_store(args) as store:
        reports = run_sync(recover(template, store))
    if not reports:
        print(f"{args.store}: no unfinished execution of {template.uid} to recover")
        return EXIT_OK
    code = EXIT_OK
    for report in reports:
        print()
        for line in summary(report):
            print(line)
        print(f"workflow {template.uid} {report['exec']['state']} (execution {report['exec']['id']})")
        why = failure(report)
        if why is not None:
            print(f"tukio: {report['exec']['id']}: {why}", file=sys.stderr)
            code = EXIT_FAILED
    return code
