"""`WorkflowSelector`: which loaded templates does data on a topic trigger?"""

from __future__ import annotations

from collections.abc import Iterable

from tukio.utils import Listen
from tukio.workflow.template import WorkflowTemplate

__all__ = ["WorkflowSelector"]


class WorkflowSelector:
    """Indexes loaded templates by topic; every operation is O(1) or O(result).

    A template whose `topics` is None is triggered by data on any topic (or
    none); ``[]`` by no data; a list by data on those topics only.
    """

    def __init__(self) -> None:
        self._templates: dict[str, WorkflowTemplate] = {}
        self._any: dict[str, WorkflowTemplate] = {}
        self._by_topic: dict[str, dict[str, WorkflowTemplate]] = {}

    def add(self, template: WorkflowTemplate) -> None:
        """Add `template`, replacing a loaded one with the same id."""
        if template.uid in self._templates:
            self.remove(template.uid)
        self._templates[template.uid] = template
        match template.listen:
            case Listen.everything:
                self._any[template.uid] = template
            case Listen.topics:
                for topic in template.topics or ():
                    self._by_topic.setdefault(topic, {})[template.uid] = template
            case Listen.nothing:
                pass

    def remove(self, template_id: str) -> WorkflowTemplate:
        """Remove and return the template with that id.

        Raises:
            KeyError: no template has that id.
        """
        try:
            template = self._templates.pop(template_id)
        except KeyError:
            raise KeyError(f"no workflow template with id {template_id!r} is loaded") from None
        self._any.pop(template_id, None)
        for topic in template.topics or ():
            templates = self._by_topic.get(topic)
            if templates is not None:
                templates.pop(template_id, None)
                if not templates:
                    del self._by_topic[topic]
        return template

    def load(self, templates: Iterable[WorkflowTemplate]) -> None:
        """Replace every loaded template with `templates`."""
        self.clear()
        for template in templates:
            self.add(template)

    def clear(self) -> None:
        """Remove every template."""
        self._templates.clear()
        self._any.clear()
        self._by_topic.clear()

    def get(self, template_id: str) -> WorkflowTemplate | None:
        """Return the loaded template with that id, or None."""
        return self._templates.get(template_id)

    def select(self, topic: str | None = None) -> list[WorkflowTemplate]:
        """Return the templates that data on `topic` triggers."""
        selected = list(self._any.values())
        if topic is not None:
            selected.extend(self._by_topic.get(topic, {}).values())
        return selected

    @property
    def templates(self) -> list[WorkflowTemplate]:
        """Every loaded template, in load order."""
        return list(self._templates.values())

    def __len__(self) -> int:
        return len(self._templates)

    def __contains__(self, template_id: object) -> bool:
        return template_id in self._templates
