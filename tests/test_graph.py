"""Workflow graphs as Graphviz DOT and Mermaid, with and without a run's states."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from tukio import Engine, WorkflowTemplate
from tukio.cli import main
from tukio.graph import (
    NOT_STARTED,
    NodeState,
    format_duration,
    node_states,
    run_duration,
    to_dot,
    to_mermaid,
    topological_order,
)
from tukio.report_json import dumps_report

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=timezone.utc)


def template(graph: dict[str, list[str]], **fields: Any) -> WorkflowTemplate:
    tasks = [{"id": uid, "name": f"n-{uid}"} for uid in graph]
    return WorkflowTemplate.from_dict({"id": "wf", "tasks": tasks, "graph": graph, **fields})


def run_entry(state: str, ms: int | None = 10, iso: bool = True) -> dict[str, Any]:
    end = None if ms is None else T0 + timedelta(milliseconds=ms)
    start: Any = T0
    if iso:
        start, end = start.isoformat(), end.isoformat() if end is not None else None
    return {"id": "x", "start": start, "end": end, "state": state, "inputs": {}, "outputs": None}


ALL_STATES = ["finished", "exception", "timeout", "skipped", "cancelled", "pending"]


def report_with_every_state(tmpl: WorkflowTemplate) -> dict[str, Any]:
    report = tmpl.as_dict()
    report["exec"] = {"id": "run", "start": T0.isoformat(), "end": None, "state": "cancelled"}
    for i, task in enumerate(report["tasks"]):
        if i < len(ALL_STATES):
            state = ALL_STATES[i]
            task["exec"] = run_entry(state, None if state == "pending" else 1500 * (i + 1))
        else:
            task["exec"] = None
    return report


def chain7() -> WorkflowTemplate:
    ids = ["a", "b", "c", "d", "e", "f", "g"]
    return template({uid: ([ids[i + 1]] if i + 1 < len(ids) else []) for i, uid in enumerate(ids)})


needs_dot = pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz 'dot' is not installed")


def render_svg(source: str) -> str:
    out = subprocess.run(["dot", "-Tsvg"], input=source, capture_output=True, text=True, timeout=30, check=False)
    assert out.returncode == 0, out.stderr
    assert not out.stderr, out.stderr
    return out.stdout


# -- DOT ----------------------------------------------------------------------------------
def test_dot_of_a_template() -> None:
    tmpl = template({"a": ["b", "c"], "b": [], "c": []}, title="demo")
    assert to_dot(tmpl) == "\n".join(
        [
            'digraph "wf" {',
            '  label="demo";',
            "  labelloc=t;",
            '  fontname="Helvetica";',
            '  node [shape=box, style="rounded,filled", fillcolor="#ffffff", fontname="Helvetica"];',
            '  edge [color="#546e7a"];',
            '  "a" [label="a\\nn-a"];',
            '  "b" [label="b\\nn-b"];',
            '  "c" [label="c\\nn-c"];',
            '  "a" -> "b";',
            '  "a" -> "c";',
            "}",
            "",
        ]
    )
    # A template's JSON object (or a report) works as well as the template.
    assert to_dot(tmpl.as_dict()) == to_dot(tmpl)


def test_dot_with_every_state() -> None:
    tmpl = chain7()
    dot = to_dot(tmpl, report_with_every_state(tmpl))
    assert 'label="wf (workflow cancelled)";' in dot
    assert '"a" [label="a\\nn-a\\nfinished, 1.50 s", fillcolor="#c8e6c9", color="#2e7d32"];' in dot
    assert '"b" [label="b\\nn-b\\nexception, 3.00 s", fillcolor="#ffcdd2"' in dot
    assert '"c" [label="c\\nn-c\\ntimeout, 4.50 s", fillcolor="#ffe0b2"' in dot
    assert '"d" [label="d\\nn-d\\nskipped, 6.00 s"' in dot
    assert '"e" [label="e\\nn-e\\ncancelled, 7.50 s"' in dot
    assert '"f" [label="f\\nn-f\\npending", fillcolor="#fff9c4"' in dot
    assert (
        '"g" [label="g\\nn-g\\nnot started", fillcolor="#ffffff", color="#9e9e9e", style="rounded,filled,dashed"];'
        in dot
    )


def test_dot_escapes_ids_and_labels() -> None:
    weird = 'say "hi"\\'
    tmpl = WorkflowTemplate.from_dict(
        {
            "id": 'w"1',
            "title": 'the "best"\nworkflow\\',
            "tasks": [{"id": weird, "name": "multi\nline"}, {"id": "plain", "name": "plain"}],
            "graph": {weird: ["plain"]},
        }
    )
    dot = to_dot(tmpl)
    assert 'digraph "w\\"1" {' in dot
    assert 'label="the \\"best\\"\\nworkflow\\\\";' in dot
    assert '"say \\"hi\\"\\\\" [label="say \\"hi\\"\\\\\\nmulti\\nline"];' in dot
    assert '"say \\"hi\\"\\\\" -> "plain";' in dot
    assert '"plain" [label="plain"];' in dot  # the name is not repeated when it is the id


@needs_dot
def test_graphviz_accepts_the_dot_output() -> None:
    tmpl = WorkflowTemplate.from_dict(
        {
            "id": "w {1}",
            "title": 'quotes " and \\ backslash',
            "tasks": [
                {"id": 'a"b', "name": "x\\y"},
                {"id": "node -> edge", "name": "<b>html</b>"},
                {"id": "c;d", "name": "n"},
            ],
            "graph": {'a"b': ["node -> edge", "c;d"]},
        }
    )
    svg = render_svg(to_dot(tmpl))
    assert svg.count('class="node"') == 3
    assert svg.count('class="edge"') == 2
    assert "a&quot;b" in svg
    assert "x\\y" in svg
    assert "&lt;b&gt;html&lt;/b&gt;" in svg
    svg = render_svg(to_dot(chain7(), report_with_every_state(chain7())))
    assert "not started" in svg
    assert "#ffcdd2" in svg


# -- Mermaid --------------------------------------------------------------------------------
def test_mermaid_of_a_template_with_states() -> None:
    tmpl = chain7()
    text = to_mermaid(tmpl, report_with_every_state(tmpl))
    lines = text.splitlines()
    assert lines[:3] == ["%% wf (workflow cancelled)", "flowchart TD", '  t0["a<br/>n-a<br/>finished, 1.50 s"]']
    assert "  t0 --> t1" in lines
    assert "  classDef exception fill:#ffcdd2,stroke:#c62828" in lines
    assert "  class t1 exception" in lines
    assert "  classDef not_started fill:#ffffff,stroke:#9e9e9e,stroke-dasharray:5 5" in lines
    assert "  class t6 not_started" in lines
    assert "classDef" not in to_mermaid(tmpl)


def test_mermaid_escapes_labels() -> None:
    tmpl = WorkflowTemplate.from_dict(
        {
            "id": "w",
            "title": "a\nb",
            "tasks": [{"id": 'q"#1', "name": "<x> & `y`"}],
            "graph": {},
        }
    )
    text = to_mermaid(tmpl)
    assert text.splitlines()[0] == "%% a b"
    assert '  t0["q#34;#35;1<br/>#60;x#62; #38; #96;y#96;"]' in text


# -- with a real run ------------------------------------------------------------------------------
async def test_a_real_report_renders_the_same_before_and_after_json(
    registered: Callable[..., Any], task_name: Callable[[str], str]
) -> None:
    ok, boom = task_name("g-ok"), task_name("g-boom")

    async def fine(event: Any) -> None:
        return None

    async def fail(event: Any) -> None:
        raise RuntimeError("no")

    registered(ok, fine)
    registered(boom, fail)
    tmpl = WorkflowTemplate.from_dict(
        {
            "id": "real",
            "tasks": [{"id": "a", "name": ok}, {"id": "b", "name": boom}, {"id": "c", "name": ok}],
            "graph": {"a": ["b"], "b": ["c"]},
        }
    )
    engine = Engine()
    workflow = await engine.run_once(tmpl, {"x": 1})
    assert workflow is not None
    await asyncio.wait([workflow])
    await asyncio.wait_for(engine.stop(), 5)
    report = workflow.report()
    states = node_states(report)
    assert [states[t].state for t in "abc"] == ["finished", "exception", NOT_STARTED]
    assert states["a"].duration is not None
    assert states["a"].duration >= 0
    from_json = json.loads(dumps_report(report))
    assert to_dot(tmpl, from_json) == to_dot(tmpl, report)
    assert to_mermaid(tmpl, from_json) == to_mermaid(tmpl, report)


# -- helpers ------------------------------------------------------------------------------------
def test_node_states_and_durations() -> None:
    assert node_states(
        {"tasks": [{"id": "a", "exec": None}, {"id": "b", "exec": run_entry("finished", 20, iso=False)}]}
    ) == {
        "a": NodeState(NOT_STARTED),
        "b": NodeState("finished", 0.02),
    }
    # Entries that are not task reports are left out rather than failing.
    assert node_states({"tasks": [1, {"name": "no id"}]}) == {}
    for bad in ([], {"tasks": {}}, {"no": "tasks"}):
        with pytest.raises(ValueError, match="not a workflow report"):
            node_states(bad)  # type: ignore[arg-type]
    assert run_duration({"start": "2024-05-01T12:00:00Z", "end": "2024-05-01T12:00:02+00:00"}) == 2
    assert run_duration({"start": "2024-05-01T12:00:00", "end": "2024-05-01T12:00:02+00:00"}) is None
    assert run_duration({"start": "yesterday", "end": "2024-05-01T12:00:02+00:00"}) is None
    assert run_duration({"start": 12, "end": None}) is None
    assert NodeState("pending").describe() == "pending"


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0.0000042, "4 us"), (0.0123, "12 ms"), (1.254, "1.25 s"), (123.4, "2 min 03 s")],
)
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


def test_topological_order_keeps_the_template_order_for_ties() -> None:
    tmpl = WorkflowTemplate.from_dict(
        {
            "tasks": [{"id": i, "name": "n"} for i in ("end", "mid2", "root", "mid1")],
            "graph": {"root": ["mid1", "mid2"], "mid1": ["end"], "mid2": ["end"]},
        }
    )
    assert [t.uid for t in topological_order(tmpl)] == ["root", "mid2", "mid1", "end"]


# -- the graph command ------------------------------------------------------------------------------
def test_graph_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tmpl = chain7()
    wf = tmp_path / "wf.json"
    wf.write_text(json.dumps(tmpl.as_dict()))
    report = tmp_path / "report.json"
    report.write_text(dumps_report(report_with_every_state(tmpl)))
    assert main(["graph", str(wf)]) == 0
    assert capsys.readouterr().out == to_dot(tmpl)
    assert main(["graph", str(wf), "--report", str(report), "--format", "mermaid"]) == 0
    assert capsys.readouterr().out == to_mermaid(tmpl, report_with_every_state(tmpl))
    out = tmp_path / "graph.dot"
    assert main(["graph", str(wf), "-r", str(report), "-o", str(out)]) == 0
    assert out.read_text() == to_dot(tmpl, report_with_every_state(tmpl))


@pytest.mark.parametrize(
    ("report_text", "message"),
    [
        (None, "cannot read report"),
        ("{oops", "json: line 1 column 2"),
        ("[1]", "not a workflow report"),
    ],
)
def test_graph_command_rejects_bad_reports(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], report_text: str | None, message: str
) -> None:
    wf = tmp_path / "wf.json"
    wf.write_text(json.dumps(chain7().as_dict()))
    report = tmp_path / "report.json"
    if report_text is not None:
        report.write_text(report_text)
    assert main(["graph", str(wf), "--report", str(report)]) == 2
    assert message in capsys.readouterr().err


def test_graph_command_refuses_a_report_of_another_workflow(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tmpl = chain7()
    wf = tmp_path / "wf.json"
    wf.write_text(json.dumps(tmpl.as_dict()))
    report = tmp_path / "report.json"
    # The template file itself: no 'exec', every task would be drawn "not started".
    assert main(["graph", str(wf), "--report", str(wf)]) == 2
    assert f"{wf}: not the report of a run: it has no 'exec' entry" in capsys.readouterr().err
    other = report_with_every_state(tmpl)
    other["id"] = "someone-else"
    report.write_text(dumps_report(other))
    assert main(["graph", str(wf), "--report", str(report)]) == 2
    assert f"{report}: a report of workflow 'someone-else', not of {tmpl.uid!r}" in capsys.readouterr().err
    renamed = report_with_every_state(tmpl)
    renamed["tasks"][0]["id"] = "zz"
    report.write_text(dumps_report(renamed))
    assert main(["graph", str(wf), "--report", str(report)]) == 2
    err = capsys.readouterr().err
    assert f"{report}: its tasks are not those of workflow {tmpl.uid!r}" in err
    assert "  missing from the report: a" in err
    assert "  not in the workflow: zz" in err
    del renamed["tasks"][0]
    report.write_text(dumps_report(renamed))
    assert main(["graph", str(wf), "--report", str(report)]) == 2
    err = capsys.readouterr().err
    assert "missing from the report: a" in err
    assert "not in the workflow" not in err


def test_graph_command_rejects_bad_workflows_and_outputs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"tasks": [{"id": "a", "name": "n"}], "graph": {"a": ["a"]}}')
    assert main(["graph", str(bad)]) == 2
    assert f"{bad}: graph: cycle a -> a" in capsys.readouterr().err
    wf = tmp_path / "wf.json"
    wf.write_text(json.dumps(chain7().as_dict()))
    assert main(["graph", str(wf), "-o", str(tmp_path / "no" / "such" / "dir.dot")]) == 2
    assert "cannot write" in capsys.readouterr().err
    assert main(["graph", str(wf), "--format", "png"]) == 2
