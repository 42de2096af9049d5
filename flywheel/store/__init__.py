"""Persistence at the edge: the database (SQLModel), content-addressed files, version folders."""

from flywheel.store.db import database_url, make_engine
from flywheel.store.migrate import upgrade_schema
from flywheel.store.objects import ObjectStore, sha256_bytes, sha256_file
from flywheel.store.repo import Store

__all__ = [
    "ObjectStore",
    "Store",
    "database_url",
    "make_engine",
    "sha256_bytes",
    "sha256_file",
    "upgrade_schema",
]
