"""One writer per index: the cross-process (and cross-machine) write lock.

Every command that writes an index takes it: `ibsr-index build` (local or `--ray`: the
Ray driver is the only process that commits), `--prune`, `--repair`, `reindex-faiss`, and
the compaction a build ends with. Readers (search, serve, info, verify) never take it:
LanceDB versions let them read a pinned version while a writer commits.

Why a lock at all: LanceDB's merge-insert is snapshot-isolated, and two inserts of the same new
shape_id touch no common fragment, so neither commit conflicts and the shape is stored twice
(lance issues 4585 and 8949, lancedb 2463 and 3377; open as of lancedb 0.40). The table's
unenforced primary key (writer.py) makes LanceDB catch that case as well, for writers that
bypass the lock; the lock also covers what the key does not: compaction, deletes, the derived
files, and the "this index is busy" message.

Mechanism: an OS lock (`flock`, through the `filelock` library) on `<index>/.ibsr-write.lock`.
The kernel drops it when its holder dies, however it dies (SIGKILL, OOM, power loss of a
local disk), so a lock left by a killed process is free by construction; no timeout has to
guess whether a slow writer is dead. On NFS, Linux emulates flock with POSIX byte-range
locks that the server arbitrates (NFSv4 natively, NFSv3 through lockd), so writers on
different machines exclude each other too; a crashed client's lock lasts until the server's
lease expires (NFSv4: about 90 s). Mounts with `nolock` or `local_lock=flock|all` make the
lock local to each machine: do not share an index across machines on such mounts. On a file
system without flock at all (some FUSE mounts), filelock falls back to a marker file whose
stale markers it breaks by pid and host.

Beside the lock, `<index>/.ibsr-write.holder.json` says who holds it (host, pid, start time,
command), for the "waiting for ..." message and `--no-wait`'s error. The holder removes it
on release; one found by a process that just took the lock was left by a writer that died,
and is reported as taken over (its uncommitted work was never visible: every LanceDB batch
and the derived files are committed atomically, see writer.py, flat.py and faiss_index.py).
"""

from __future__ import annotations

import datetime
import json
import os
import socket
import sys
import threading
from dataclasses import asdict, dataclass
from pathlib import Path

from filelock import FileLock, Timeout

from ibsr.errors import IbsrError
from ibsr.files import atomic_write
from ibsr.index.layout import HOLDER_FILE, LOCK_FILE

# Locks this process holds, per (index directory, thread): nested writers in one thread
# (a build that rebuilds the prefilter) share the outer hold instead of deadlocking on it.
_held: dict[tuple[str, int], "IndexWriteLock"] = {}
_held_guard = threading.Lock()


@dataclass(frozen=True)
class Holder:
    """Who holds (or, if left behind, last held) an index's write lock."""

    host: str
    pid: int
    started: str  # ISO 8601, local time with offset
    command: str

    @classmethod
    def of_this_process(cls, command: str | None) -> "Holder":
        return cls(host=socket.gethostname(), pid=os.getpid(),
                   started=datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
                   command=command or " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]))

    def describe(self) -> str:
        return f"pid {self.pid} on host {self.host} (`{self.command}`, since {self.started})"

    def is_gone(self) -> bool:
        """True when this holder ran on this host and is no longer running (False if unknown)."""
        if self.host != socket.gethostname():
            return False  # another machine: only its lock (held or not) can tell
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False  # alive, another user's
        return False


def read_holder(index_dir: Path) -> Holder | None:
    """The holder file's content, or None if absent or unreadable (a writer mid-write)."""
    try:
        data = json.loads((Path(index_dir) / HOLDER_FILE).read_text())
        return Holder(host=str(data["host"]), pid=int(data["pid"]), started=str(data["started"]),
                      command=str(data["command"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _write_holder(index_dir: Path, holder: Holder) -> None:
    atomic_write(index_dir / HOLDER_FILE, json.dumps(asdict(holder)), parents=False)


class IndexWriteLock:
    """`with IndexWriteLock(index_dir):` holds the index's write lock.

    wait=True blocks until the lock is free, after printing once who holds it; wait=False
    raises an IbsrError naming the holder. `took_over` is the Holder a killed writer left
    behind, when this lock replaced one. Re-entrant within one thread.
    """

    def __init__(self, index_dir: Path, wait: bool = True, command: str | None = None, quiet: bool = False):
        self.index_dir = Path(index_dir)
        self.wait = wait
        self.command = command
        self.quiet = quiet
        self.took_over: Holder | None = None
        self._lock: FileLock | None = None
        self._outer: IndexWriteLock | None = None

    def _key(self) -> tuple[str, int]:
        return (os.path.realpath(self.index_dir), threading.get_ident())

    def __enter__(self) -> "IndexWriteLock":
        with _held_guard:
            self._outer = _held.get(self._key())
        if self._outer is not None:  # this thread already holds it
            self.took_over = self._outer.took_over
            return self
        try:
            self.index_dir.mkdir(parents=True, exist_ok=True)
            self._lock = FileLock(str(self.index_dir / LOCK_FILE))
            self._acquire()
        except OSError as exc:
            raise IbsrError(f"cannot take the index's write lock ({exc.strerror or exc}); writing an index needs "
                            "write access to its folder", self.index_dir) from None
        self.took_over = read_holder(self.index_dir)  # still there: its writer died holding the lock
        if self.took_over is not None:
            self._say(f"{self.index_dir}: taking over the write lock of {self.took_over.describe()}, which ended "
                      "without releasing it; nothing it had not committed is visible")
        try:
            _write_holder(self.index_dir, Holder.of_this_process(self.command))
        except OSError as exc:
            self._lock.release()
            raise IbsrError(f"cannot write to the index folder ({exc.strerror or exc}); free space or fix its "
                            "permissions, then rerun", self.index_dir) from None
        with _held_guard:
            _held[self._key()] = self
        return self

    def _acquire(self) -> None:
        try:
            self._lock.acquire(blocking=False)
            return
        except Timeout:
            pass
        holder = read_holder(self.index_dir)
        who = _who(holder)
        if not self.wait:
            raise IbsrError(f"another writer holds this index: {who}; wait for it to finish "
                            "(or run without --no-wait to wait)", self.index_dir)
        self._say(f"{self.index_dir}: waiting for the write lock, held by {who} (Ctrl-C to stop)")
        self._lock.acquire()

    def __exit__(self, *exc) -> None:
        if self._outer is not None:
            return
        with _held_guard:
            _held.pop(self._key(), None)
        try:
            (self.index_dir / HOLDER_FILE).unlink(missing_ok=True)
        finally:
            self._lock.release()

    def _say(self, message: str) -> None:
        if not self.quiet:
            print(message, file=sys.stderr, flush=True)


def _who(holder: Holder | None) -> str:
    if holder is None:
        return "another process (it has not written its name yet)"
    if holder.is_gone():
        # The lock is held, yet its recorded holder is dead: a child it started inherited it.
        return (f"{holder.describe()}, which is no longer running; a process it started still holds the lock: "
                "end that process")
    return holder.describe()


def holds_write_lock(index_dir: Path) -> bool:
    """Whether this thread holds the write lock of `index_dir` (for assertions in writers)."""
    with _held_guard:
        return (os.path.realpath(index_dir), threading.get_ident()) in _held
