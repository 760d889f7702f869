"""Hostile input (huge nesting, huge numbers, huge cycles, modules that exit) fails in one clear line."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tukio import Engine, TaskRegistry, WorkflowTemplate
from tukio.cli import main
from tukio.errors import TemplateError

DEEP = "[" * 100_000 + "]" * 100_000
BIG = "9" * 5000


def _workflow(config: str = "{}") -> str:
    return '{"id": "w", "tasks": [{"id": "a", "name": "hostile-ok", "config": ' + config + '}], "graph": {}}'


HOSTILE = {
    "deep": (DEEP, "nested deeper than"),
    "deep-config": (_workflow('{"x": ' + "[" * 900 + "]" * 900 + "}"), "nested deeper than"),
    "big-int": ('{"id": "w", "timeout": ' + BIG + ', "tasks": [], "graph": {}}', "5000 digits"),
    "big-int-in-config": (_workflow('{"n": ' + BIG + "}"), "5000 digits"),
}


@pytest.fixture
def files(tmp_path: Path) -> Iterator[Path]:
    module = tmp_path / "hostile_tasks.py"
    module.write_text(
        "from tukio import register\n\n@register('hostile-ok')\nasync def ok(event):\n    return event.data\n"
    )
    (tmp_path / "exits.py").write_text("import sys\nsys.exit(7)\n")
    (tmp_path / "exits_quietly.py").write_text("raise SystemExit\n")
    (tmp_path / "ok.json").write_text(_workflow())
    for name, (text, _) in HOSTILE.items():
        (tmp_path / f"{name}.json").write_text(text)
    yield tmp_path
    if TaskRegistry.registered("hostile-ok"):
        TaskRegistry.unregister("hostile-ok")
    for stem in ("hostile_tasks", "exits", "exits_quietly"):
        sys.modules.pop(stem, None)
    while str(tmp_path) in sys.path:
        sys.path.remove(str(tmp_path))


def _one_line(capsys: pytest.CaptureFixture[str]) -> str:
    captured = capsys.readouterr()
    lines = (captured.out + captured.err).strip().splitlines()
    assert "Traceback" not in captured.err
    assert all(len(line) < 300 for line in lines), lines
    return "\n".join(lines)


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_from_json_and_from_file_raise_template_error(name: str, files: Path) -> None:
    text, message = HOSTILE[name]
    with pytest.raises(TemplateError, match=message):
        WorkflowTemplate.from_json(text)
    with pytest.raises(TemplateError, match=message):
        WorkflowTemplate.from_file(files / f"{name}.json")


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_validate_and_graph_print_one_line_and_exit_2(
    name: str, files: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = str(files / f"{name}.json")
    for argv in (["validate", path], ["graph", path]):
        assert main(argv) == 2
        text = _one_line(capsys)
        assert path in text
        assert HOSTILE[name][1] in text


@pytest.mark.parametrize("name", ["deep", "big-int"])
def test_run_with_hostile_data_file_exits_2(name: str, files: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = files / "data.json"
    data.write_text(DEEP if name == "deep" else '{"n": ' + BIG + "}")
    argv = ["run", str(files / "hostile_tasks.py"), str(files / "ok.json"), "--data", f"@{data}"]
    assert main(argv) == 2
    text = _one_line(capsys)
    assert str(data) in text
    assert ("nested deeper than" if name == "deep" else "5000 digits") in text
    assert main(["run", str(files / "hostile_tasks.py"), str(files / "ok.json"), "--data", '{"n": ' + BIG + "}"]) == 2
    assert "--data" in _one_line(capsys)


def test_run_on_a_hostile_workflow_exits_2(files: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", str(files / "hostile_tasks.py"), str(files / "deep-config.json")]) == 2
    assert "nested deeper than" in _one_line(capsys)


@pytest.mark.parametrize(("module", "code"), [("exits.py", "7"), ("exits_quietly.py", "None")])
def test_a_module_exiting_on_import_is_reported(
    module: str, code: str, files: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = str(files / module)
    assert main(["run", path, str(files / "ok.json")]) == 2
    assert _one_line(capsys) == f"tukio: error: importing module {path} exited with code {code}"
    assert main(["validate", "-m", path, str(files / "ok.json")]) == 2
    assert "exited with code" in _one_line(capsys)


async def test_engine_load_rejects_what_is_not_a_template() -> None:
    engine = Engine()
    with pytest.raises(TypeError, match="list"):
        await engine.load([1, 2])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="int"):
        await engine.reload([3])  # type: ignore[list-item]
    with pytest.raises(TemplateError, match="template: must be an object"):
        WorkflowTemplate.from_dict([1, 2])  # type: ignore[arg-type]
    await engine.stop()


def test_a_long_cycle_is_reported_briefly() -> None:
    n = 10_000
    tasks = [{"id": f"t{i}", "name": "x"} for i in range(n)]
    graph = {f"t{i}": [f"t{(i + 1) % n}"] for i in range(n)}
    with pytest.raises(TemplateError) as caught:
        WorkflowTemplate.from_dict({"tasks": tasks, "graph": graph})
    [problem] = caught.value.problems
    assert len(problem) < 200, problem
    assert problem.startswith("graph: cycle t0 -> t1 -> t2")
    assert problem.endswith(f"t9999 -> t0 (a cycle of {n})")


def test_a_short_cycle_is_reported_in_full() -> None:
    with pytest.raises(TemplateError, match=r"^graph: cycle a -> b -> a$"):
        WorkflowTemplate.from_dict(
            {"tasks": [{"id": "a", "name": "x"}, {"id": "b", "name": "x"}], "graph": {"a": ["b"], "b": ["a"]}}
        )


def test_huge_numbers_built_in_python_are_named_briefly() -> None:
    [timeout] = _problems({"timeout": -(10**5000), "tasks": []})
    assert "timeout" in timeout
    assert len(timeout) < 200
    [schema] = _problems({"schema": -(10**5000), "tasks": []})
    assert len(schema) < 200


def _problems(d: dict[str, Any]) -> list[str]:
    with pytest.raises(TemplateError) as caught:
        WorkflowTemplate.from_dict(d)
    return caught.value.problems


def test_deep_data_in_a_dict_template_is_refused() -> None:
    config: Any = {}
    for _ in range(1000):
        config = {"x": config}
    with pytest.raises(TemplateError, match=r"tasks\[0\]\.config: nested deeper than"):
        WorkflowTemplate.from_dict({"tasks": [{"id": "a", "name": "x", "config": config}]})


@pytest.mark.parametrize("where", ["workflow", "task"])
def test_deep_extension_keys_are_refused(where: str) -> None:
    deep: Any = []
    for _ in range(1000):
        deep = [deep]
    task: dict[str, Any] = {"id": "a", "name": "x"}
    workflow: dict[str, Any] = {"tasks": [task]}
    (workflow if where == "workflow" else task)["meta"] = deep
    location = "meta" if where == "workflow" else r"tasks\[0\]\.meta"
    with pytest.raises(TemplateError, match=rf"^{location}: nested deeper than 100 levels$"):
        WorkflowTemplate.from_dict(workflow)
