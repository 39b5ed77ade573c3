"""Crash-safe file writes: write a temporary file in the target's folder, then `os.replace` it
over the target.

Readers (a searcher opening an index, a resumed training run, a cached ONNX export, a loaded
checkpoint) look at the target's name only, and `os.replace` within one folder is atomic: the
name points at the old file or at the whole new one. So a crash, a kill or a full disk in the
middle of a write never leaves a half-written file where a reader looks. On an error the
temporary file is removed and the error re-raised as it was (the target keeps its old content);
only a kill or a power cut can leave a temporary file behind, named `.<target name>.<random>.tmp`
by default, so that a folder's cleanup can tell it by its `.tmp` suffix.

Durability is the caller's: `fsync=True` flushes the file's data to disk before the replace, so
that after a power cut the target holds the old content or the new, never a short file. The
folder itself is not fsynced (no writer did): a power cut just after the replace may bring back
the old file, never a broken one.

`mode=None` gives the file the permissions `open()` would (0o666 less the umask); an int sets
exactly those (e.g. 0o644 for a file other users must read; 0o600, tempfile.mkstemp's, for a
private one).

Standard library only: the lowest layer, usable from every package.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
from pathlib import Path
from typing import Iterator

__all__ = ["atomic_path", "atomic_write"]

_TRIES = 100  # names to try before giving up (tempfile's TMP_MAX is 10000; 32 random bits each)


@contextlib.contextmanager
def atomic_path(path, *, fsync: bool = False, mode: int | None = None, prefix: str | None = None,
                suffix: str = ".tmp", parents: bool = True) -> Iterator[Path]:
    """`with atomic_path(target) as tmp:` write the file `tmp`; when the block ends without an
    exception, `tmp` replaces `target` (fsynced first if `fsync`). On any exception (KeyboardInterrupt
    included) `tmp` is removed and the exception goes on unchanged; the target is untouched.

    For writers that take a file name (torch.save, faiss.write_index, numpy.save, open(tmp, "w")
    for json.dump...). `tmp` exists (empty) in the target's folder, named `prefix` + random +
    `suffix` (`prefix` defaults to `.<target name>.`); keep writing to that very name (numpy.save
    and numpy.savez add a suffix to a name that lacks theirs: pass them an open file). torch.save
    stores its archive under the file's name when given a name: pass it an open file for the same
    bytes whatever the temporary name. `parents` creates the target's missing folders first.
    """
    path = Path(path)
    if parents:
        path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _create(path.parent, f".{path.name}." if prefix is None else prefix, suffix, mode)
    try:
        yield tmp
        if fsync:
            _fsync(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write(path, data: bytes | str, *, fsync: bool = False, mode: int | None = None,
                 prefix: str | None = None, suffix: str = ".tmp", parents: bool = True) -> Path:
    """Write `data` (str as UTF-8) to `path` through `atomic_path`; returns `path` as a Path."""
    path = Path(path)
    with atomic_path(path, fsync=fsync, mode=mode, prefix=prefix, suffix=suffix, parents=parents) as tmp:
        with open(tmp, "wb") as f:
            f.write(data.encode("utf-8") if isinstance(data, str) else data)
    return path


def _create(folder: Path, prefix: str, suffix: str, mode: int | None) -> Path:
    """A new empty file in `folder` under a name no one else holds (O_EXCL), with its permissions set."""
    for _ in range(_TRIES):
        tmp = folder / f"{prefix}{secrets.token_hex(4)}{suffix}"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666 if mode is None else mode)
        except FileExistsError:
            continue
        try:
            if mode is not None:
                os.fchmod(fd, mode)  # exactly `mode`, whatever the umask
        except BaseException:
            os.close(fd)
            tmp.unlink(missing_ok=True)
            raise
        os.close(fd)
        return tmp
    raise FileExistsError(errno.EEXIST, "no free temporary file name", str(folder / f"{prefix}*{suffix}"))


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
