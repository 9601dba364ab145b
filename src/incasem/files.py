"""Small file-system helpers shared by the layers: atomic writes and configurable folders."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from incasem.errors import IncasemError

__all__ = ["atomic_write", "atomic_write_text", "configured_folder"]


def _default_file_mode() -> int:
    """Permissions of a newly created file: ``0o666`` less the process umask."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def atomic_write(path: Path, write: Callable[[BinaryIO], object]) -> Path:
    """Write a file atomically: into a temporary file next to it, fsync, rename over it.

    Readers never see a partial file, a failure (a full disk) leaves ``path`` as it was
    and no temporary file behind. The file gets the usual permissions (``0o666`` less the
    umask), not the ``0o600`` of a temporary file. Missing parent folders are created.

    Parameters
    ----------
    path : pathlib.Path
        Destination file.
    write : callable
        Called with the open binary stream; writes the content (what it returns is ignored).

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as stream:
            write(stream)
            stream.flush()
            os.fsync(stream.fileno())
        os.chmod(tmp_name, _default_file_mode())
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return path


def atomic_write_text(path: Path, text: str) -> Path:
    """:func:`atomic_write` of ``text`` as UTF-8."""
    return atomic_write(path, lambda stream: stream.write(text.encode("utf-8")))


def configured_folder(explicit: str | os.PathLike[str] | None, env_var: str, default: Path, what: str, option: str, error: type[IncasemError]) -> Path:
    """A folder given explicitly, else by ``$env_var``, else ``default`` (not created here).

    Raises
    ------
    IncasemError
        ``error`` if that path exists and is not a folder, naming ``option`` and ``env_var``.
    """
    if explicit is not None:
        root = Path(explicit).expanduser()
    elif os.environ.get(env_var):
        root = Path(os.environ[env_var]).expanduser()
    else:
        root = default.expanduser()
    if root.exists() and not root.is_dir():
        raise error(f"{what} {root} is a file, not a folder: give a folder with {option} or ${env_var}")
    return root
