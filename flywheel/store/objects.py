"""Content-addressed files: `objects/<sha[:2]>/<sha>`, written once, never changed.

Dataset versions hard-link these files, so a version costs directory entries, not copies.
Writes go to a temp file in the same folder and are renamed into place, so a crash leaves
either the whole object or nothing (a stray temp file at worst, removed on the next put).
"""

from __future__ import annotations

import os
import tempfile
import uuid
from pathlib import Path

from flywheel.core.errors import IntegrityError, StoreError
from flywheel.core.hashing import sha256_bytes, sha256_file

__all__ = ["ObjectStore", "sha256_bytes", "sha256_file"]  # the hashes are the core's, named here too


class ObjectStore:
    def __init__(self, root: Path, suffix: str = "") -> None:
        self.root = root
        self.suffix = suffix  # checkpoints keep ".pt": Ultralytics loads weights by suffix

    def path(self, sha: str) -> Path:
        return self.root / sha[:2] / (sha + self.suffix)

    def has(self, sha: str) -> bool:
        return self.path(sha).is_file()

    def put_bytes(self, data: bytes, durable: bool = True) -> str:
        """Store `data`; with durable=False the caller calls sync() before relying on it (one
        sync for a whole batch instead of an fsync per object)."""
        sha = sha256_bytes(data)
        if not self.has(sha):
            self._write(sha, data, durable)
        return sha

    def put_file(self, source: Path, sha: str | None = None, durable: bool = True) -> str:
        sha = sha or sha256_file(source)
        if not self.has(sha):
            self._write(sha, source.read_bytes(), durable)
        return sha

    def link_file(self, source: Path, sha: str) -> str:
        """Store `source` (whose sha256 is `sha`) as a hard link: no copy, no extra disk. The file
        becomes read-only and shares its bytes with the store, so only for files flywheel owns
        from now on (a dropped batch it moves to inbox/.done/, an unpacked archive). Copies
        instead where a link cannot be made (another file system)."""
        target = self.path(sha)
        if target.is_file():
            return sha
        tmp = target.parent / f".tmp-{sha}-{uuid.uuid4().hex[:8]}"
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp.unlink(missing_ok=True)
            os.link(source, tmp)
            os.chmod(tmp, 0o444)
            os.replace(tmp, target)
        except OSError:
            tmp.unlink(missing_ok=True)
            return self.put_file(source, sha, durable=False)
        return sha

    @staticmethod
    def sync() -> None:
        """Flush every object written with durable=False to disk."""
        os.sync()

    def verify(self, sha: str) -> Path:
        """The object's path, after checking its bytes still hash to `sha`."""
        path = self.path(sha)
        if not path.is_file():
            raise IntegrityError(f"object {sha} is missing from {self.root}; the store is damaged")
        actual = sha256_file(path)
        if actual != sha:
            raise IntegrityError(
                f"{path} hashes to {actual}, not {sha}: the file was changed after it was "
                "stored. Restore it from backup, or remove the record that points at it"
            )
        return path

    def _write(self, sha: str, data: bytes, durable: bool = True) -> None:
        target = self.path(sha)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-")
            try:
                with os.fdopen(fd, "wb") as fh:
                    fh.write(data)
                    if durable:
                        fh.flush()
                        os.fsync(fh.fileno())
                os.chmod(tmp, 0o444)  # hard links share it: keep every version read-only
                os.replace(tmp, target)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        except OSError as exc:
            raise StoreError(
                f"cannot write object {sha} under {self.root}: {exc.strerror or exc}. "
                "Check free space and that the data root is writable"
            ) from exc
