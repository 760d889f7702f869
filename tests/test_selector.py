"""The selector: which loaded templates data on a topic triggers."""

from __future__ import annotations

import pytest

from tukio import TaskTemplate, WorkflowSelector, WorkflowTemplate


def tmpl(uid: str, topics: list[str] | None) -> WorkflowTemplate:
    t = WorkflowTemplate(uid=uid, topics=topics)
    t.add(TaskTemplate("x"))
    return t


def test_select_by_topic() -> None:
    sel = WorkflowSelector()
    anything, blob, never = tmpl("any", None), tmpl("blob", ["blob", "b2"]), tmpl("never", [])
    for t in (anything, blob, never):
        sel.add(t)
    assert sel.select() == [anything]
    assert sel.select("blob") == [anything, blob]
    assert sel.select("b2") == [anything, blob]
    assert sel.select("other") == [anything]
    assert len(sel) == 3
    assert "never" in sel
    assert sel.get("never") is never
    assert sel.get("missing") is None


def test_replace_and_remove() -> None:
    sel = WorkflowSelector()
    sel.add(tmpl("w", ["a"]))
    newer = tmpl("w", ["b"])
    sel.add(newer)
    assert sel.select("a") == []
    assert sel.select("b") == [newer]
    assert sel.remove("w") is newer
    assert sel.select("b") == []
    with pytest.raises(KeyError, match="'w'"):
        sel.remove("w")


def test_load_and_clear() -> None:
    sel = WorkflowSelector()
    sel.add(tmpl("old", None))
    a, b = tmpl("a", None), tmpl("b", ["t"])
    sel.load([a, b])
    assert sel.templates == [a, b]
    sel.clear()
    assert sel.templates == []
    assert sel.select("t") == []
