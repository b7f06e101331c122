"""One generic `Registry`: named callables with the pydantic params class that validates their options."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict

from edgekit.errors import unknown


class NoParams(BaseModel):
    """Params class for entries that take no options."""

    model_config = ConfigDict(extra="forbid")


@dataclass(frozen=True)
class Entry:
    name: str
    fn: Callable
    params: type[BaseModel]


class Registry:
    """Name → (callable, params class). `get` raises a did-you-mean error for unknown names."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, Entry] = {}

    def register(self, name: str, params: type[BaseModel] = NoParams) -> Callable:
        def add(fn: Callable) -> Callable:
            if name in self._entries:
                raise ValueError(f"{self.kind} '{name}' registered twice")
            self._entries[name] = Entry(name, fn, params)
            return fn

        return add

    def get(self, name: str, where: str = "") -> Entry:
        if name not in self._entries:
            raise unknown(self.kind, name, self._entries, where)
        return self._entries[name]

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: str) -> bool:
        return name in self._entries
