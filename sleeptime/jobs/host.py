"""What the jobs need of the App, as a Protocol: jobs/ never imports sleeptime.app (the App imports jobs/), so the
two cannot form an import circle. `sleeptime.app.App` is the one implementation."""

from collections.abc import Sequence
from typing import Any, Protocol

from sleeptime.db import Store
from sleeptime.jobs.consolidate import Consolidation
from sleeptime.settings import Settings


class Host(Protocol):
    settings: Settings
    store: Store

    def consolidate(self, context: str, progress: Any = None, abort: Any = None, fresh: bool = False) -> Consolidation:
        ...

    def consolidate_many(
        self, contexts: Sequence[str], aborts: Sequence[Any] | None = None
    ) -> list[Consolidation | BaseException]: ...

    def enqueue(self, kind: str, context: str, payload: dict[str, Any] | None = None) -> int: ...

    def prune(self, context: str) -> list[int]: ...

    def sweep(self) -> list[str]: ...

    def collect_garbage(self) -> list[str]: ...
