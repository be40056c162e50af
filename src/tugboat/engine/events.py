"""The engine's event bus: a bounded history plus live subscribers (``docker events``)."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

Event = dict[str, Any]


class EventBus:
    def __init__(self, history: int = 1000) -> None:
        self._lock = threading.Lock()
        self._history: deque[Event] = deque(maxlen=history)
        self._subs: list[Callable[[Event], None]] = []

    def emit(self, type_: str, action: str, actor_id: str, attributes: dict[str, str] | None = None) -> Event:
        now = time.time_ns()
        ev: Event = {
            "Type": type_,
            "Action": action,
            "Actor": {"ID": actor_id, "Attributes": dict(attributes or {})},
            "scope": "local",
            "time": now // 1_000_000_000,
            "timeNano": now,
        }
        if type_ == "container":
            ev["status"] = action
            ev["id"] = actor_id
            ev["from"] = (attributes or {}).get("image", "")
        with self._lock:
            self._history.append(ev)
            subs = list(self._subs)
        for cb in subs:
            try:
                cb(ev)
            except Exception:
                pass
        return ev

    def subscribe(self, cb: Callable[[Event], None]) -> Callable[[], None]:
        with self._lock:
            self._subs.append(cb)

        def unsubscribe() -> None:
            with self._lock:
                if cb in self._subs:
                    self._subs.remove(cb)

        return unsubscribe

    def history(self, since: float) -> list[Event]:
        with self._lock:
            return [e for e in self._history if e["timeNano"] / 1e9 >= since]
