"""Events: the data carried by the broker, and where it comes from."""

from __future__ import annotations

from typing import Any

__all__ = ["Event", "EventSource", "data_of"]

_new = object.__new__


class EventSource:
    """Where an event comes from: a workflow template and execution, a task."""

    __slots__ = ("_task_exec_id", "_task_template_id", "_workflow_exec_id", "_workflow_template_id")

    def __init__(
        self,
        workflow_template_id: str | None = None,
        workflow_exec_id: str | None = None,
        task_template_id: str | None = None,
        task_exec_id: str | None = None,
    ) -> None:
        self._workflow_template_id = workflow_template_id
        self._workflow_exec_id = workflow_exec_id
        self._task_template_id = task_template_id
        self._task_exec_id = task_exec_id

    @property
    def workflow_template_id(self) -> str | None:
        """Id of the workflow template, if any."""
        return self._workflow_template_id

    @property
    def workflow_exec_id(self) -> str | None:
        """Id of the workflow execution, if any."""
        return self._workflow_exec_id

    @property
    def task_template_id(self) -> str | None:
        """Id of the task template, if any."""
        return self._task_template_id

    @property
    def task_exec_id(self) -> str | None:
        """Id of the task execution, if any."""
        return self._task_exec_id

    def as_dict(self) -> dict[str, str | None]:
        """Return the four ids as a dict."""
        return {
            "workflow_template_id": self._workflow_template_id,
            "workflow_exec_id": self._workflow_exec_id,
            "task_template_id": self._task_template_id,
            "task_exec_id": self._task_exec_id,
        }

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, EventSource):
            return NotImplemented
        return self.as_dict() == other.as_dict()

    def __hash__(self) -> int:
        return hash(tuple(self.as_dict().values()))

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in self.as_dict().items() if v is not None)
        return f"EventSource({fields})"


class Event:
    """Data dispatched by the broker, with its topic and source.

    Args:
        data: a dict (stored as a shallow copy) or an `Event` (its data is copied).
        topic: the topic the event was dispatched on.
        source: an `EventSource`, or None.

    Raises:
        ValueError: `data` is not a dict or an Event, or `source` is not an
            EventSource.
    """

    __slots__ = ("_data", "_id", "_owned", "_source", "_topic")

    def __init__(
        self, data: dict[str, Any] | Event, topic: str | None = None, source: EventSource | None = None
    ) -> None:
        if isinstance(data, Event):
            data = data.data
        elif not isinstance(data, dict):
            raise ValueError(f"event data must be a dict or an Event, not {type(data).__name__}")
        if source is not None and not isinstance(source, EventSource):
            raise ValueError(f"event source must be an EventSource or None, not {type(source).__name__}")
        self._data = dict(data)
        self._owned = True  # False: `_data` is still the sender's dict (see with_source_of)
        self._topic = topic
        self._source: Any = source  # an EventSource, or what makes one (see with_source_of)
        # The id of the event in a store shared by several engines (see `tukio.cluster`), once published.
        self._id: int | None = None

    @property
    def data(self) -> dict[str, Any]:
        """The event's data (a dict the receiver may modify)."""
        if not self._owned:
            # Copied on first use (see `with_source_of`): many receivers never read it.
            self._data = self._data.copy()
            self._owned = True
        return self._data

    @property
    def topic(self) -> str | None:
        """The topic the event was dispatched on, if any."""
        return self._topic

    @property
    def source(self) -> EventSource | None:
        """Where the event comes from, if known."""
        source = self._source
        if source is None or type(source) is EventSource:
            return source
        # Made on first use (see `with_source_of`): most events are never asked.
        made: EventSource = source.event_source
        self._source = made
        return made

    @classmethod
    def with_source_of(cls, data: dict[str, Any], origin: Any) -> Event:
        """Wrap `data` (a dict) with ``origin.event_source`` as source, read when first asked for.

        `origin` is anything with an `event_source` property (a tukio task).
        The data is copied when first read: until then, the caller must not
        modify `data` (a task's outputs, which nothing modifies).
        """
        event = _new(cls)
        event._data = data
        event._owned = False
        event._topic = None
        event._source = origin
        event._id = None
        return event

    def source_ids(self) -> tuple[str | None, str | None]:
        """Return the source's workflow execution id and task template id, or Nones.

        Unlike `source`, it does not make the source (nor a task execution
        id) when the event was made by `with_source_of`: a join reads only these.
        """
        source = self._source
        if source is None:
            return None, None
        if type(source) is EventSource:
            return source._workflow_exec_id, source._task_template_id
        ids = getattr(source, "source_ids", None)
        if ids is not None:
            found: tuple[str | None, str | None] = ids()
            return found
        made = self.source
        assert made is not None
        return made._workflow_exec_id, made._task_template_id

    def __repr__(self) -> str:
        return f"Event(data={self._data!r}, topic={self._topic!r}, source={self.source!r})"


def data_of(data: Any) -> Any:
    """The data an `Event` carries (not copied: only to read or copy it), or `data` itself when not an Event."""
    return data._data if isinstance(data, Event) else data
