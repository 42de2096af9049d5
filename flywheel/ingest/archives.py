"""Batches dropped as one archive (.zip, .tar, .tar.gz, ...): every member is checked before
anything is written, and only regular files are written, each to a path flywheel computed
inside the staging folder, never one the archive chose.

Python's zipfile and tarfile read the archives (well kept, in the standard library); their
extractall is not used: it would follow the archive's own idea of paths and links. Members
with absolute paths or `..` (zip-slip), and links that point outside the batch, refuse the
whole batch; links inside it and special files are recorded and quarantined, never created.
The bytes written are counted as they are written, so a zip bomb stops at the cap however
small its headers say it is.
"""

from __future__ import annotations

import re
import stat
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from flywheel.ingest.layout import Listing, link_escapes
from flywheel.ingest.reasons import BatchRefused, Code

SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")
_CHUNK = 1 << 20
_DRIVE = re.compile(r"^[A-Za-z]:")


def is_archive(path: Path) -> bool:
    return path.is_file() and path.name.lower().endswith(SUFFIXES)


@dataclass
class _Member:
    name: str  # the member's path as the archive gives it
    kind: str  # "file", "dir", "link", "special"
    target: str = ""  # a link's target: relative to the link (symlink) or to the archive root (hard link)
    rooted: bool = False
    handle: object = None  # the reader's own record of the member (ZipInfo, TarInfo)


class ArchiveRefused(BatchRefused):
    """The archive as a whole is refused; `members` are its member paths when they could be read."""

    def __init__(self, code: Code, message: str, members: list[str]) -> None:
        super().__init__(code, message)
        self.members = members


_READ_ERRORS = (zipfile.BadZipFile, zipfile.LargeZipFile, tarfile.TarError, OSError, EOFError, RuntimeError, ValueError)


def extract(archive: Path, dest: Path, max_bytes: int) -> Listing:
    """Regular members written under `dest`; links and special members listed, not written."""
    try:
        reader: _Reader = _ZipReader(archive) if archive.name.lower().endswith(".zip") else _TarReader(archive)
    except _READ_ERRORS as exc:
        raise ArchiveRefused(Code.ARCHIVE_UNREADABLE, f"{archive}: cannot read the archive: {exc}", []) from None
    with reader:
        try:
            members = reader.members()
        except _READ_ERRORS as exc:
            raise ArchiveRefused(Code.ARCHIVE_UNREADABLE, f"{archive}: cannot read the archive: {exc}", []) from None
        names = [m.name for m in members if m.kind != "dir"]
        listing = _check(archive, members, dest, names)
        written = 0
        for m in members:
            rel = _safe_name(m.name)
            if m.kind != "file" or not rel:
                continue
            try:
                target = dest / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                with reader.open(m) as src, target.open("wb") as out:
                    while chunk := src.read(_CHUNK):
                        written += len(chunk)
                        if written > max_bytes:
                            raise ArchiveRefused(
                                Code.ARCHIVE_TOO_LARGE,
                                f"{archive}: unpacks to more than ingest.max_archive_bytes = {max_bytes} bytes; "
                                "split it into smaller batches or raise the cap",
                                names,
                            )
                        out.write(chunk)
            except _READ_ERRORS as exc:
                raise ArchiveRefused(
                    Code.ARCHIVE_UNREADABLE, f"{archive}: cannot unpack member {m.name!r}: {exc}", names
                ) from None
    return listing


def _check(archive: Path, members: list[_Member], dest: Path, names: list[str]) -> Listing:
    listing = Listing(dest)
    seen: set[str] = set()
    for m in members:
        rel = _safe_name(m.name)
        if rel is None:
            raise ArchiveRefused(
                Code.ZIP_SLIP,
                f"{archive}: member {m.name!r} has an absolute path or `..`; nothing was used. "
                "Re-create the archive with paths relative to the batch",
                names,
            )
        escapes = _safe_name(m.target) is None if m.rooted else link_escapes(rel, m.target)
        if m.kind == "link" and escapes:
            raise ArchiveRefused(
                Code.LINK_OUTSIDE,
                f"{archive}: member {m.name!r} links to {m.target!r}, outside the batch; nothing was used. "
                "Put the file itself in the archive",
                names,
            )
        if m.kind == "dir" or not rel:
            continue
        if rel in seen:
            raise ArchiveRefused(Code.ARCHIVE_UNREADABLE, f"{archive}: two members are named {rel!r}", names)
        seen.add(rel)
        if m.kind == "link":
            listing.links[rel] = m.target
        elif m.kind == "special":
            listing.special.append(rel)
        else:
            listing.files.append(rel)
    listing.files.sort()
    listing.special.sort()
    return listing


def _safe_name(name: str) -> str | None:
    """The member's relpath ("" for the root itself), or None if it would land outside the batch."""
    text = name.replace("\\", "/")
    if text.startswith("/") or _DRIVE.match(text):
        return None
    parts = [p for p in text.split("/") if p not in ("", ".")]
    return None if ".." in parts else "/".join(parts)


class _Reader:
    def members(self) -> list[_Member]:
        raise NotImplementedError

    def open(self, member: _Member) -> IO[bytes]:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> _Reader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _ZipReader(_Reader):
    def __init__(self, archive: Path) -> None:
        self.zf = zipfile.ZipFile(archive)

    def members(self) -> list[_Member]:
        out = []
        for info in self.zf.infolist():
            mode = info.external_attr >> 16  # Unix mode, when the zip was made on Unix
            if info.is_dir():
                out.append(_Member(info.filename, "dir"))
            elif stat.S_ISLNK(mode):
                out.append(_Member(info.filename, "link", self.zf.read(info).decode("utf-8", "replace")))
            elif stat.S_IFMT(mode) and not stat.S_ISREG(mode):
                out.append(_Member(info.filename, "special"))
            else:
                out.append(_Member(info.filename, "file", handle=info))
        return out

    def open(self, member: _Member) -> IO[bytes]:
        assert isinstance(member.handle, zipfile.ZipInfo)
        return self.zf.open(member.handle)

    def close(self) -> None:
        self.zf.close()


class _TarReader(_Reader):
    def __init__(self, archive: Path) -> None:
        self.tf = tarfile.open(archive)  # noqa: SIM115  (closed by close(), as ZipFile is)

    def members(self) -> list[_Member]:
        out = []
        for info in self.tf.getmembers():
            if info.isdir():
                out.append(_Member(info.name, "dir"))
            elif info.issym():
                out.append(_Member(info.name, "link", info.linkname))
            elif info.islnk():
                out.append(_Member(info.name, "link", info.linkname, rooted=True))
            elif info.isreg():
                out.append(_Member(info.name, "file", handle=info))
            else:
                out.append(_Member(info.name, "special"))
        return out

    def open(self, member: _Member) -> IO[bytes]:
        assert isinstance(member.handle, tarfile.TarInfo)
        stream = self.tf.extractfile(member.handle)
        if stream is None:
            raise tarfile.TarError(f"member {member.name!r} has no data")
        return stream

    def close(self) -> None:
        self.tf.close()
