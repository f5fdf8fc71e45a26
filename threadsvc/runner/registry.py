"""Jobs by name: the @job decorator, and the registry that finds them.

A job is an `async def job(ctx)`; the decorator declares its name, where it may run (scope),
the minimum role to start it, its parameters and how it is run: its time bound (`timeout`), its
further attempts (`retry`, a `Retry`) and how many of its threads may run at once across every
node (`concurrency`). The registry takes the built-in jobs, the
entry-point group `threadsvc.jobs` and the modules of the `jobs` setting.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable, Coroutine, Iterable, Mapping
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from types import ModuleType
from typing import TYPE_CHECKING, Any

from threadsvc.errors import BadParameter, UnknownJob
from threadsvc.models import Group, Principal, Role, Scope
from threadsvc.runner.child import check_importable
from threadsvc.runner.params import Param
from threadsvc.runner.retrying import Retry
from threadsvc.uploads import Upload

if TYPE_CHECKING:
    from threadsvc.runner.context import Context

log = logging.getLogger(__name__)

JobFunction = Callable[["Context"], Coroutine[Any, Any, Any]]
BUILTIN_MODULES = ("threadsvc.jobs.sleep", "threadsvc.jobs.validate", "threadsvc.jobs.transform")
ENTRY_POINT_GROUP = "threadsvc.jobs"


@dataclass(frozen=True)
class JobSpec:
    name: str
    fn: JobFunction
    scope: Scope = Scope.GROUP
    role: Role = Role.CONTRIBUTOR
    params: Mapping[str, Param] = field(default_factory=dict)
    title: str = ""
    description: str = ""
    retry_safe: bool = False  # may run again from the start after its node was lost
    timeout: float | None = None  # seconds from its start (every attempt and wait): then failed
    retry: Retry | None = None  # further attempts after an exception that qualifies
    concurrency: int | None = None  # at most this many of its threads run at once, cluster-wide
    process: bool = False  # runs in a child process of its own (runner/child.py)

    def __post_init__(self) -> None:
        if self.timeout is not None and not self.timeout > 0:
            raise ValueError(f"job '{self.name}': timeout must be a positive number of seconds")
        if self.concurrency is not None and (
            isinstance(self.concurrency, bool) or not isinstance(self.concurrency, int)
            or self.concurrency < 1
        ):
            raise ValueError(f"job '{self.name}': concurrency must be a positive int")

    def parse_params(self, fields: Iterable[tuple[str, str | Upload]]) -> dict[str, Any]:
        """Validate form fields against the declared parameters; a bad one is a BadParameter."""
        values: dict[str, Any] = {}
        for name, raw in fields:
            param = self.params.get(name)
            if param is None:
                raise BadParameter(name, f"is not a parameter of job '{self.name}'")
            value = param.accept(name, raw)
            if param.multiple:
                values.setdefault(name, []).append(value)
            elif name in values:
                raise BadParameter(name, "is given more than once")
            else:
                values[name] = value
        for name, param in self.params.items():
            if name not in values:
                if param.required:
                    raise BadParameter(name, "is required")
                values[name] = [] if param.multiple and param.default is None else param.default
        return values

    def check(self, who: Principal, group: Group | None, params: dict[str, Any]) -> None:
        """Checks that depend on the parsed parameters (raise Forbidden or BadParameter);
        the service calls it after `parse_params`. Jobs whose rules vary by parameter
        (such as `command`) override it."""

    def thread_name(self, group: Group | None) -> str:
        title = self.title or f"{self.name.capitalize()} thread"
        return f"{title} for group {group.name}" if group else f"{title} for the server"


def job(
    name: str,
    *,
    scope: Scope = Scope.GROUP,
    role: Role = Role.CONTRIBUTOR,
    params: Mapping[str, Param] | None = None,
    title: str = "",
    retry_safe: bool = False,
    timeout: float | None = None,
    retry: Retry | None = None,
    concurrency: int | None = None,
    spec: type[JobSpec] = JobSpec,
    process: bool = False,
) -> Callable[[JobFunction], JobSpec]:
    """Declare an async function as a job; the module holding it is registered by the registry.
    A job that parses or checks its parameters its own way gives its JobSpec subclass as `spec`.

    `timeout`: seconds from the thread's start after which its code is cancelled and it ends
    `failed`; `retry`: run it again after an exception that qualifies (see `Retry`);
    `concurrency`: at most that many threads of the job run at once on all nodes together,
    the others wait `initialised`; `process`: it runs in a child process, so it must be
    importable by module and name."""

    def declare(fn: JobFunction) -> JobSpec:
        if process:
            check_importable(fn)
        return spec(
            name=name,
            fn=fn,
            scope=scope,
            role=role,
            params=dict(params or {}),
            title=title,
            description=(fn.__doc__ or "").strip(),
            retry_safe=retry_safe,
            timeout=timeout,
            retry=retry,
            concurrency=concurrency,
            process=process,
        )

    return declare


class Registry:
    def __init__(self, specs: Iterable[JobSpec] = ()) -> None:
        self._jobs: dict[str, JobSpec] = {}
        for spec in specs:
            self.add(spec)

    def add(self, spec: JobSpec) -> None:
        if spec.name in self._jobs and self._jobs[spec.name] is not spec:
            raise ValueError(f"two jobs are named '{spec.name}'")
        self._jobs[spec.name] = spec

    def add_module(self, module: ModuleType) -> None:
        for value in vars(module).values():
            if isinstance(value, JobSpec):
                self.add(value)

    def get(self, name: str) -> JobSpec:
        spec = self._jobs.get(name)
        if spec is None:
            raise UnknownJob(name)
        return spec

    def __iter__(self) -> Any:
        return iter(sorted(self._jobs.values(), key=lambda spec: spec.name))

    def concurrency_limits(self) -> dict[str, int]:
        """Job name -> most threads running at once, for the jobs that declare one."""
        return {spec.name: spec.concurrency for spec in self._jobs.values() if spec.concurrency}

    @classmethod
    def load(cls, modules: Iterable[str] = ()) -> Registry:
        registry = cls()
        for name in (*BUILTIN_MODULES, *modules):
            registry.add_module(importlib.import_module(name))
        for entry in entry_points(group=ENTRY_POINT_GROUP):
            loaded = entry.load()
            if isinstance(loaded, JobSpec):
                registry.add(loaded)
            elif isinstance(loaded, ModuleType):
                registry.add_module(loaded)
            else:
                log.warning("entry point %s is neither a job nor a module", entry.name)
        return registry
