"""``mera.build``'s transaction: a deploy directory is replaced whole, or not at all.

The new files are written into a *staging* directory beside ``output_dir``
(``.<name>.mera-build-XXXXXXXX``) and flushed to disk. Every other entry of
``output_dir`` (``input0.bin``, subfolders, ...) is hard-linked into it (its
subfolders recreated), so nothing the user put there changes inode, bytes or
time. Then one ``renameat2(RENAME_EXCHANGE)`` swaps the two directories: at
every instant the path names either the previous complete directory or the
new one. The previous one, now at the staging name, is deleted.

When the swap cannot be used (the filesystem has no ``RENAME_EXCHANGE``,
``output_dir`` is a mount point or holds the working directory of this
process, its parent is not writable, an entry cannot be hard-linked), the
three files are renamed into place one by one, deploy.so first; the log
says so. An interruption in that window leaves files of two builds, which
both loaders refuse (deploy.so embeds the model id of its deploy.params).

Builds that touch the same parent directory hold a lock on it (``flock``),
so every staging directory found while holding it is the leftover of an
interrupted build and is deleted; the runtime archive cache does the same
for its partial folders.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import re
import shutil
import stat
import tempfile
from typing import List, Optional

from .errors import MeraIOError

#: The three files of a deploy directory, in the order the fallback renames them.
DEPLOY_FILES = ("deploy.so", "deploy.params", "deploy.json")

STAGING_TAG = ".mera-build-"
#: A staging directory: ``.<name>.mera-build-XXXXXXXX`` beside output_dir, or ``.mera-build-XXXXXXXX`` in it
#: (the random part is tempfile.mkdtemp's).
_STAGING_NAME = re.compile(r"^(\..*)?\.mera-build-[a-z0-9_]{8}$")

_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _io_error(what: str, e: OSError) -> MeraIOError:
    return MeraIOError(f"{what}: {e.strerror or e}")


class DirLock:
    """An exclusive ``flock`` on a directory, for the duration of a ``with`` block. ``blocking=False``:
    :attr:`held` says whether it was free. The lock follows the path: when the directory was replaced
    while waiting, the new one is locked."""

    def __init__(self, path: str, blocking: bool = True):
        self.path = path
        self.blocking = blocking
        self.fd = -1
        self.held = False

    def __enter__(self) -> "DirLock":
        while True:
            try:
                fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            except OSError as e:
                raise _io_error(f"cannot open the directory '{self.path}'", e) from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | (0 if self.blocking else fcntl.LOCK_NB))
            except BlockingIOError:
                os.close(fd)
                return self
            except OSError as e:  # no locks on this filesystem: go on unlocked
                if e.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.EINVAL):
                    os.close(fd)
                    raise _io_error(f"cannot lock the directory '{self.path}'", e) from None
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(self.path))
            except OSError:
                same = False
            if same:
                self.fd, self.held = fd, True
                return self
            os.close(fd)  # replaced while we waited: lock the new one

    def __exit__(self, *exc) -> None:
        if self.fd >= 0:
            os.close(self.fd)  # releases the flock
            self.fd, self.held = -1, False


def remove_leftovers(directory: str) -> List[str]:
    """Delete the staging directories of interrupted builds in ``directory`` (call with its lock held)."""
    removed = []
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return removed
    for e in entries:
        if _STAGING_NAME.match(e.name) and e.is_dir(follow_symlinks=False):
            shutil.rmtree(e.path, ignore_errors=True)
            removed.append(e.name)
    return removed


def _fsync_path(path: str, directory: bool = False) -> None:
    fd = os.open(path, (os.O_RDONLY | os.O_DIRECTORY) if directory else os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError as e:
        if e.errno not in (errno.EINVAL, errno.EROFS):  # some filesystems cannot sync a directory
            raise
    finally:
        os.close(fd)


def _exchange(a: str, b: str) -> None:
    """Swap the directories ``a`` and ``b`` atomically (Linux ``renameat2``); OSError if unsupported."""
    libc = ctypes.CDLL(None, use_errno=True)
    fn = getattr(libc, "renameat2", None)
    if fn is None:
        raise OSError(errno.ENOSYS, "renameat2 is not available")
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


class _CannotMirror(Exception):
    """An entry of output_dir cannot be carried into the staging directory by a hard link."""


def _mirror(src: str, dst: str, skip: tuple = ()) -> None:
    """Hard-link every file of ``src`` into the existing ``dst``, recreating subfolders and symlinks."""
    for e in os.scandir(src):
        if e.name in skip or _STAGING_NAME.match(e.name):
            continue
        to = os.path.join(dst, e.name)
        try:
            if e.is_symlink():
                os.symlink(os.readlink(e.path), to)
            elif e.is_dir(follow_symlinks=False):
                os.mkdir(to)
                _mirror(e.path, to)
                shutil.copystat(e.path, to, follow_symlinks=False)
            elif e.is_file(follow_symlinks=False):
                os.link(e.path, to, follow_symlinks=False)
            else:
                raise _CannotMirror(f"'{e.path}' is not a regular file, folder or symlink")
        except OSError as err:
            raise _CannotMirror(f"cannot hard-link '{e.path}': {err.strerror}") from None


def _inside(path: str, directory: str) -> bool:
    return path == directory or path.startswith(directory.rstrip(os.sep) + os.sep)


class DeployTransaction:
    """Write a deploy directory's files, then :meth:`commit` them all at once.

    ``with DeployTransaction(output_dir, log) as tx:`` locks, deletes leftovers of interrupted builds,
    creates the staging directory; :meth:`path` names a file in it, :meth:`write` writes one; leaving
    the block without :meth:`commit` deletes the staging directory and leaves ``output_dir`` as it was.
    ``output_dir=None``: the commit creates a new directory ``mera_deploy_*`` in the system temp folder.
    """

    def __init__(self, output_dir: Optional[str], log=lambda msg: None):
        self.log = log
        self.output_dir = os.path.realpath(output_dir) if output_dir is not None else None
        self.parent = os.path.dirname(self.output_dir) if self.output_dir else tempfile.gettempdir()
        self.in_place_reason = self._in_place_reason()
        self.staging = ""
        self.committed = False
        self._locks: List[DirLock] = []

    def _in_place_reason(self) -> str:
        """Why the directory swap cannot be used ('' when it can)."""
        d = self.output_dir
        if d is None:
            return ""
        if d == self.parent:
            return f"'{d}' is the root directory"
        if not os.access(self.parent, os.R_OK | os.W_OK | os.X_OK):
            return f"its parent '{self.parent}' is not readable and writable"
        try:
            if os.stat(self.parent).st_dev != os.stat(d).st_dev:
                return f"'{d}' is a mount point"
        except OSError as e:
            return f"cannot stat '{d}': {e.strerror}"
        try:
            cwd = os.path.realpath(os.getcwd())
        except OSError:
            cwd = ""
        if cwd and _inside(cwd, d):
            return "it holds the working directory of this process (a swap would leave it in the old folder)"
        return ""

    # -- the block ----------------------------------------------------------------------------

    def __enter__(self) -> "DeployTransaction":
        try:
            if not self.in_place_reason:
                self._locks.append(DirLock(self.parent).__enter__())
                remove_leftovers(self.parent)
            if self.output_dir is not None:
                self._locks.append(DirLock(self.output_dir).__enter__())
                remove_leftovers(self.output_dir)
            where, prefix = ((self.output_dir, STAGING_TAG) if self.in_place_reason else
                             (self.parent, "." + os.path.basename(self.output_dir or "mera_deploy")[:100] + STAGING_TAG))
            try:
                self.staging = tempfile.mkdtemp(prefix=prefix, dir=where)
            except OSError as e:
                raise _io_error(f"cannot create a staging directory in '{where}'", e) from None
        except BaseException:
            self._release()
            raise
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if not self.committed and self.staging:
                shutil.rmtree(self.staging, ignore_errors=True)
        finally:
            self._release()

    def _release(self) -> None:
        while self._locks:
            self._locks.pop().__exit__()

    # -- writing ------------------------------------------------------------------------------

    def path(self, name: str) -> str:
        return os.path.join(self.staging, name)

    def write(self, name: str, data: bytes) -> None:
        """Write ``data`` as ``name`` in the staging directory and flush it to disk."""
        path = self.path(name)
        try:
            with open(path, "xb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
        except OSError as e:
            raise _io_error(f"cannot write '{path}'", e) from None

    # -- commit -------------------------------------------------------------------------------

    def commit(self) -> str:
        """Put the staged files in place; returns the deploy directory."""
        for name in DEPLOY_FILES:
            if not os.path.isfile(self.path(name)):
                raise MeraIOError(f"the build did not stage {name}")
        try:
            for name in DEPLOY_FILES:
                _fsync_path(self.path(name))
            _fsync_path(self.staging, directory=True)
            if self.output_dir is None:
                self.output_dir = tempfile.mkdtemp(prefix="mera_deploy_", dir=self.parent)
                self.log(f"mera.build: output_dir {self.output_dir}")
            reason = self.in_place_reason or self._swap()
            if reason:
                self.log(f"mera.build: the files are replaced one by one, not as one directory swap: {reason}")
                self._rename_files()
        except OSError as e:
            raise _io_error(f"cannot put the new files into '{self.output_dir}'", e) from None
        return self.output_dir

    def _swap(self) -> str:
        """Swap the staging directory in; '' on success, else why it could not be done (nothing changed)."""
        target, staging = self.output_dir, self.staging
        try:
            _mirror(target, staging, skip=DEPLOY_FILES)
        except _CannotMirror as e:
            return str(e)
        st = os.stat(target)
        os.chmod(staging, stat.S_IMODE(st.st_mode))
        if (st.st_uid, st.st_gid) != (os.getuid(), os.getgid()):
            try:
                os.chown(staging, st.st_uid, st.st_gid)
            except OSError:
                pass
        try:
            _exchange(staging, target)
        except OSError as e:
            if e.errno in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.EPERM):
                return f"the filesystem cannot swap two directories (renameat2 RENAME_EXCHANGE: {e.strerror})"
            raise
        self.committed = True
        old = staging  # the previous directory now has the staging name
        try:
            # entries created in the previous directory since they were linked: carry them over
            now = set(os.listdir(target))
            for name in os.listdir(old):
                if name not in now and name not in DEPLOY_FILES and not _STAGING_NAME.match(name):
                    os.rename(os.path.join(old, name), os.path.join(target, name))
            _fsync_path(self.parent, directory=True)
        finally:
            shutil.rmtree(old, ignore_errors=True)
        return ""

    def _rename_files(self) -> None:
        for name in DEPLOY_FILES:
            os.replace(self.path(name), os.path.join(self.output_dir, name))
        _fsync_path(self.output_dir, directory=True)
        self.committed = True
        shutil.rmtree(self.staging, ignore_errors=True)
