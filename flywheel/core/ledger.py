"""The production ledger's hash chain. Pure functions, no I/O.

Each entry's hash is the sha256 of its own fields (id, time, action, models, actor, reason)
and the previous entry's hash. Changing, removing or reordering any entry breaks every hash
after it, which `verify` reports; `flywheel audit verify` runs it over the whole ledger.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from datetime import UTC, datetime
from enum import StrEnum
from typing import Protocol

GENESIS = "0" * 64


class Action(StrEnum):
    PROMOTE = "promote"  # by the gate, or by hand (`flywheel promote`)
    REJECT = "reject"  # the gate refused a candidate
    ROLLBACK = "rollback"
    PIN = "pin"  # hold promotions while investigating
    UNPIN = "unpin"
    GOLDEN_CHANGED = "golden_changed"  # the golden eval set's content changed
    GC = "gc"  # `flywheel gc` freed space under the retention policy (what, in the reason)
    EXPORT_FAILED = "export_failed"  # a candidate the gate passed was held: an export failed or missed parity


class Entry(Protocol):
    @property
    def id(self) -> int | None: ...
    @property
    def at(self) -> datetime: ...
    @property
    def action(self) -> str: ...
    @property
    def model_id(self) -> int | None: ...
    @property
    def previous_model_id(self) -> int | None: ...
    @property
    def actor(self) -> str: ...
    @property
    def reason(self) -> str: ...
    @property
    def prev_hash(self) -> str: ...
    @property
    def entry_hash(self) -> str: ...


def digest(entry: Entry, prev_hash: str) -> str:
    at = entry.at if entry.at.tzinfo else entry.at.replace(tzinfo=UTC)
    fields = {
        "id": entry.id,
        "at": at.astimezone(UTC).isoformat(timespec="microseconds"),
        "action": entry.action,
        "model_id": entry.model_id,
        "previous_model_id": entry.previous_model_id,
        "actor": entry.actor,
        "reason": entry.reason,
        "prev_hash": prev_hash,
    }
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()


def verify(entries: Iterable[Entry]) -> list[str]:
    """Problems found walking the chain in id order; empty when it is intact."""
    problems = []
    expected_prev = GENESIS
    for entry in entries:
        if entry.prev_hash != expected_prev:
            problems.append(
                f"entry {entry.id}: its link to the previous entry is broken (an entry was removed, "
                "inserted or edited before it)"
            )
        if digest(entry, entry.prev_hash) != entry.entry_hash:
            problems.append(f"entry {entry.id} ({entry.action}): its content does not match its hash (edited)")
        expected_prev = entry.entry_hash
    return problems
