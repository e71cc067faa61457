"""The use-case modules as tests call them: each call is its own committed unit of work.

Use cases only flush; the request, task or command that runs them commits. A test that calls
one directly stands in for that caller, so it calls it through these modules: every function
taking the session first runs inside ``unit_of_work.run`` (committed when it returns, rolled
back when it raises, retried when the database broke a deadlock), exactly as a page, an API
operation or a task runs it. Everything else (constants, classes) is the module's own.
"""

from __future__ import annotations

import functools
import inspect
from types import ModuleType
from typing import Any

from sqlalchemy.orm import Session

from scheduler import accounts as _accounts
from scheduler import links as _links
from scheduler import records as _records
from scheduler import services as _services
from scheduler import unit_of_work


class _Committing:
    def __init__(self, module: ModuleType) -> None:
        object.__setattr__(self, "_module", module)

    def __setattr__(self, name: str, value: Any) -> None:
        raise TypeError("patch the real module (scheduler.<name>), not this committing view")

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._module, name)
        if not inspect.isfunction(value):
            return value
        parameters = list(inspect.signature(value).parameters)
        if not parameters or parameters[0] != "session":
            return value

        @functools.wraps(value)
        def committed(session: Session, *args: Any, **kwargs: Any) -> Any:
            return unit_of_work.run(session, lambda: value(session, *args, **kwargs))

        return committed


services: Any = _Committing(_services)
records: Any = _Committing(_records)
accounts: Any = _Committing(_accounts)
links: Any = _Committing(_links)
