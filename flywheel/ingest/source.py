"""What was dropped, made readable: a folder as it is, an archive unpacked into a private
staging folder (removed afterwards), anything else refused. Also the batch's identity: a hash
of its content (every entry's path and bytes, less the ignored files), never its name.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from flywheel.ingest import archives
from flywheel.ingest.layout import Listing, list_entries
from flywheel.ingest.reasons import BatchRefused, Code
from flywheel.store import sha256_file


@dataclass
class Source:
    dropped: Path  # the folder or file as it lies in the inbox
    listing: Listing  # its entries; listing.root is where the files can be read
    archive: bool = False
    refused: BatchRefused | None = None  # found while opening: nothing in it can be used
    members: list[str] = field(default_factory=list)  # a refused archive's members, for the report

    @property
    def entries(self) -> list[str]:
        """Every entry to account for: files, links and special files (or a refused archive's members)."""
        if self.refused is not None and not self.listing.count:
            return self.members or [self.dropped.name]
        return sorted([*self.listing.files, *self.listing.links, *self.listing.special])


@contextmanager
def open_source(dropped: Path, staging_root: Path, max_archive_bytes: int) -> Iterator[Source]:
    if dropped.is_symlink():
        refused = BatchRefused(
            Code.LINK_OUTSIDE, f"{dropped} is a link; copy (or move) the batch itself into the inbox"
        )
        yield Source(dropped, Listing(dropped.parent), refused=refused)
        return
    if dropped.is_dir():
        yield Source(dropped, list_entries(dropped))
        return
    if not archives.is_archive(dropped):
        refused = BatchRefused(
            Code.BATCH_NOT_A_BATCH,
            f"{dropped} is neither a batch folder nor an archive ({', '.join(archives.SUFFIXES)}); "
            "drop a folder (or an archive of one) holding images, labels and class names",
        )
        yield Source(dropped, Listing(dropped.parent), refused=refused)
        return
    staging = staging_root / f"{dropped.name}.{uuid.uuid4().hex[:8]}"
    staging.mkdir(parents=True)
    try:
        try:
            listing = archives.extract(dropped, staging, max_archive_bytes)
        except archives.ArchiveRefused as exc:
            yield Source(dropped, Listing(staging), archive=True, refused=exc, members=exc.members)
            return
        yield Source(dropped, listing, archive=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def clear_staging(staging_root: Path) -> None:
    """Remove what an interrupted ingest left in the staging folder (one ingest runs at a time)."""
    shutil.rmtree(staging_root, ignore_errors=True)


def file_hashes(source: Source) -> dict[str, str]:
    """sha256 of every regular file (hashlib runs without the GIL: threads overlap reading and hashing)."""
    root, files = source.listing.root, source.listing.files
    with ThreadPoolExecutor(min(8, 2 * (os.cpu_count() or 1))) as pool:
        return dict(zip(files, pool.map(lambda f: sha256_file(root / f), files), strict=True))


def identity(source: Source, shas: dict[str, str], ignored: set[str]) -> str:
    """The batch's content hash: same files (paths and bytes), same batch, whatever its name."""
    if source.dropped.is_symlink():
        return hashlib.sha256(f"link:{source.dropped.readlink()}".encode()).hexdigest()
    if source.refused is not None and not shas:
        return sha256_file(source.dropped) if source.dropped.is_file() else hashlib.sha256(b"").hexdigest()
    lines = [f"{rel}\0{sha}\n" for rel, sha in shas.items() if rel not in ignored]
    lines += [f"{rel}\0->{target}\n" for rel, target in source.listing.links.items()]
    lines += [f"{rel}\0special\n" for rel in source.listing.special]
    return hashlib.sha256("".join(sorted(lines)).encode()).hexdigest()
