"""`Versions`: which template versions an engine runs its executions on.

An execution is pinned to the version of the template it began with (see
`WorkflowTemplate.version`). The loaded template runs new triggers; an
execution resumed from the journal (recovery, takeover) runs on its own
version: the loaded template when that is the same version, else the
template the store kept for it, rebuilt here once and shared by every
execution of that version.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from tukio._report import describe_error
from tukio.errors import TemplateError, TukioError
from tukio.workflow.template import WorkflowTemplate, version_of

if TYPE_CHECKING:
    from tukio.store.base import Store

__all__ = ["VersionProblem", "Versions"]

log = logging.getLogger(__name__)


class VersionProblem(TukioError):
    """An execution's template version cannot run in this engine (the message says why)."""


class Versions:
    """The versions an engine can run, and why the others cannot.

    Args:
        loaded: returns the loaded template with an id, or None.
        loaded_ids: returns the ids of the loaded templates.
    """

    def __init__(
        self,
        loaded: Callable[[str], WorkflowTemplate | None],
        loaded_ids: Callable[[], list[str]],
    ) -> None:
        self._loaded = loaded
        self._loaded_ids = loaded_ids
        self._built: dict[str, WorkflowTemplate] = {}  # stored versions rebuilt here
        self._problems: dict[str, str] = {}  # stored versions that cannot run here, and why

    def problem(self, version: str | None) -> str | None:
        """Why `version` cannot run here, when that was found out; else None."""
        return self._problems.get(version) if version is not None else None

    def forget_problems(self) -> None:
        """Check the versions found unrunnable again (tasks may have been registered since)."""
        self._problems.clear()

    def resolve(self, template_id: str | None, stored: dict[str, Any]) -> WorkflowTemplate:
        """The template an execution of `template_id` runs on, from its report (`stored`).

        Args:
            template_id: the execution's template id (it must be loaded).
            stored: the execution's report from the store: its template
                version's dict plus 'exec' (with 'version'; None for an
                execution journaled before versions were kept).

        Raises:
            VersionProblem: the template is not loaded, or the stored version
                does not validate here (naming the version and the problem).
        """
        loaded = self._loaded(template_id) if template_id is not None else None
        if loaded is None:
            raise VersionProblem(f"template {template_id} is not loaded")
        exec_info = stored.get("exec")
        version = exec_info.get("version") if isinstance(exec_info, dict) else None
        if version is None:
            version = version_of(stored)
        if version == loaded.version:
            return loaded
        template = self._built.get(version)
        if template is not None:
            return template
        template = self._build(version, stored)
        self._built[version] = template
        return template

    def _build(self, version: str, stored: dict[str, Any]) -> WorkflowTemplate:
        """Rebuild and validate a stored version; remember why it fails."""
        try:
            template = WorkflowTemplate.from_dict(stored)
            template.validate()
        except TemplateError as exc:
            reason = self._problems[version] = f"its template version {version} cannot run here: {describe_error(exc)}"
            raise VersionProblem(reason) from None
        if template.version != version:
            log.warning("template version %s reads back as %s: it runs as stored", version, template.version)
        return template

    async def runnable(self, store: Store) -> set[str]:
        """The versions of the loaded templates this engine can run (what it may claim).

        The loaded versions, and each version the store keeps of a loaded
        template id that validates here (every task name registered).
        """
        ids = self._loaded_ids()
        loaded = set(ids)
        found = {t.version for tid in ids if (t := self._loaded(tid)) is not None}
        found.update(v for v, t in self._built.items() if t.uid in loaded)
        stored = await asyncio.to_thread(store.versions)
        for version, template_id in stored.items():
            if version in found or version in self._problems or template_id not in loaded:
                continue
            try:
                data = await asyncio.to_thread(store.template_version, version)
                self.resolve(template_id, {**data, "exec": {"version": version}})
            except VersionProblem:
                continue
            except Exception as exc:
                self._problems[version] = f"its template version {version} cannot be read: {describe_error(exc)}"
                continue
            found.add(version)
        return found
