"""A plain record base class (``dataclasses`` costs more to import than it saves here)."""

from __future__ import annotations


class Record:
    """Keyword-constructed record: class attributes are defaults, annotations document fields."""

    def __init__(self, **fields: object) -> None:
        for cls in reversed(type(self).__mro__):
            for name in getattr(cls, "__annotations__", {}):
                if name not in fields and not hasattr(cls, name):
                    raise TypeError(f"{type(self).__name__}: missing field {name!r}")
        for name, value in fields.items():
            setattr(self, name, value)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.__dict__!r})"
