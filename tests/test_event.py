"""Events and event sources: copies, validation, read-only properties."""

from __future__ import annotations

from typing import Any

import pytest

from tukio.event import Event, EventSource


def test_event_stores_a_shallow_copy_of_its_dict() -> None:
    nested = {"deep": 1}
    data: dict[str, Any] = {"a": 1, "nested": nested}
    event = Event(data, topic="t")
    assert event.data == data
    assert event.data is not data
    data["a"] = 2
    assert event.data["a"] == 1
    # Shallow: nested values are shared.
    assert event.data["nested"] is nested
    assert event.topic == "t"
    assert event.source is None


def test_event_defaults() -> None:
    event = Event({})
    assert event.data == {}
    assert event.topic is None
    assert event.source is None


def test_event_from_event_copies_the_data() -> None:
    source = EventSource(workflow_template_id="wf")
    first = Event({"x": 1}, topic="first", source=source)
    second = Event(first, topic="second")
    assert second.data == {"x": 1}
    assert second.data is not first.data
    second.data["x"] = 2
    assert first.data == {"x": 1}
    # The new event's own topic and source apply, not the wrapped event's.
    assert second.topic == "second"
    assert second.source is None
    third = Event(first, source=source)
    assert third.source is source
    assert third.topic is None


@pytest.mark.parametrize("data", [None, [("a", 1)], "text", 42, ("a",), {1, 2}])
def test_event_rejects_data_that_is_not_a_dict(data: Any) -> None:
    with pytest.raises(ValueError, match="event data must be a dict or an Event"):
        Event(data)


@pytest.mark.parametrize("source", ["wf", {"workflow_template_id": "wf"}, 1, Event({})])
def test_event_rejects_a_bad_source(source: Any) -> None:
    with pytest.raises(ValueError, match="event source must be an EventSource or None"):
        Event({}, source=source)


@pytest.mark.parametrize("attribute", ["data", "topic", "source"])
def test_event_properties_are_read_only(attribute: str) -> None:
    event = Event({"a": 1}, topic="t", source=EventSource())
    with pytest.raises(AttributeError):
        setattr(event, attribute, None)
    assert event.data == {"a": 1}
    assert event.topic == "t"


def test_event_repr_shows_its_fields() -> None:
    text = repr(Event({"a": 1}, topic="t", source=EventSource(task_exec_id="x")))
    assert text == "Event(data={'a': 1}, topic='t', source=EventSource(task_exec_id='x'))"


def test_event_source_defaults_to_none_everywhere() -> None:
    source = EventSource()
    assert source.as_dict() == {
        "workflow_template_id": None,
        "workflow_exec_id": None,
        "task_template_id": None,
        "task_exec_id": None,
    }
    assert repr(source) == "EventSource()"


def test_event_source_fields_and_as_dict() -> None:
    source = EventSource("wt", "we", "tt", "te")
    assert source.workflow_template_id == "wt"
    assert source.workflow_exec_id == "we"
    assert source.task_template_id == "tt"
    assert source.task_exec_id == "te"
    assert source.as_dict() == {
        "workflow_template_id": "wt",
        "workflow_exec_id": "we",
        "task_template_id": "tt",
        "task_exec_id": "te",
    }
    # as_dict returns a new dict each time.
    source.as_dict()["task_exec_id"] = "changed"
    assert source.task_exec_id == "te"


def test_event_source_keywords() -> None:
    source = EventSource(task_template_id="f1", workflow_exec_id="run")
    assert source.as_dict() == {
        "workflow_template_id": None,
        "workflow_exec_id": "run",
        "task_template_id": "f1",
        "task_exec_id": None,
    }


@pytest.mark.parametrize("attribute", ["workflow_template_id", "workflow_exec_id", "task_template_id", "task_exec_id"])
def test_event_source_properties_are_read_only(attribute: str) -> None:
    source = EventSource("wt", "we", "tt", "te")
    with pytest.raises(AttributeError):
        setattr(source, attribute, "other")
    assert source.as_dict()[attribute] != "other"


def test_event_source_equality_and_hash() -> None:
    a = EventSource("wt", "we")
    b = EventSource(workflow_template_id="wt", workflow_exec_id="we")
    c = EventSource("wt", "other")
    assert a == b
    assert hash(a) == hash(b)
    assert a != c
    assert a != "wt"
    assert len({a, b, c}) == 2


def test_event_with_source_of_copies_its_data_when_first_read() -> None:
    outputs: dict[str, Any] = {"a": 1}
    event = Event.with_source_of(outputs, None)
    data = event.data
    assert data == {"a": 1}
    assert data is not outputs
    data["a"] = 2  # the receiver's own copy: the sender's dict is untouched
    assert outputs == {"a": 1}
    assert event.data is data  # copied once
    assert Event(event).data == {"a": 2}
