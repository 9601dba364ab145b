"""The exception tree of incasem.

Every error a user can cause derives from :class:`IncasemError`. Its message is one
line that says what is wrong, where (file, dataset or key) and what to do about it.
Only the command line catches these: it prints the message and exits with status 1
(the traceback is shown with ``--debug``).

A message names a setting as the caller knows it: :func:`option` writes both names, the
API parameter (``block_shape``, ``mode="resume"``) and the command line's flag
(``--block-size``, ``--resume``); ``str(error)`` shows the first, and the command line prints
:meth:`IncasemError.for_cli`, which shows the second. Code that wraps an error's message in
another keeps both by quoting ``error.args[0]``.
"""

from __future__ import annotations

import re

#: Brackets of an option in a message (private-use characters, never in user text).
_OPEN, _SPLIT, _CLOSE = "\ue000", "\ue001", "\ue002"
_OPTION = re.compile(f"{_OPEN}([^{_SPLIT}]*){_SPLIT}([^{_CLOSE}]*){_CLOSE}")


def option(parameter: str, flag: str) -> str:
    """A setting in an error message: ``parameter`` as the Python API names it, ``flag`` on the command line.

    ``option("block_shape", "--block-size")`` reads ``block_shape`` in ``str(error)`` and
    ``--block-size`` in what ``incasem`` prints.
    """
    return f"{_OPEN}{parameter}{_SPLIT}{flag}{_CLOSE}"


def api_text(message: str) -> str:
    """``message`` with each :func:`option` as its API parameter."""
    return _OPTION.sub(r"\1", message)


def cli_text(message: str) -> str:
    """``message`` with each :func:`option` as its command-line flag."""
    return _OPTION.sub(r"\2", message)


class IncasemError(Exception):
    """Base class of all errors caused by user input or the environment."""

    def __str__(self) -> str:
        return api_text(super().__str__())

    def for_cli(self) -> str:
        """The message as the command line prints it: options named by their flags."""
        return cli_text(super().__str__())


class InvalidValueError(IncasemError, ValueError):
    """An option or argument has a value outside what it accepts (also a ``ValueError``)."""


class InputFileError(IncasemError):
    """An input file or folder is missing, empty, unreadable or inconsistent."""


class DatasetNotFoundError(IncasemError):
    """A dataset (array) is not present in a zarr container."""


class NotAContainerError(IncasemError):
    """A path is not a zarr container."""


class DatasetExistsError(IncasemError):
    """An output dataset exists already and neither overwrite nor resume was asked for."""


class ExportFolderError(IncasemError):
    """An export's output folder is the source container, inside or around it, a file or the current directory."""


class DatasetMismatchError(IncasemError):
    """An existing dataset differs from the one a resumed job expects."""


class MetadataError(IncasemError):
    """A container's or dataset's stored metadata (zarr JSON, geometry attributes) is damaged or invalid."""


class RoiError(InvalidValueError):
    """A region of interest lies (partly) outside the data or does not fit the grid."""


class VoxelSizeError(InvalidValueError):
    """Voxel sizes of two things that must agree differ."""


class ConfigError(IncasemError):
    """A data or job configuration file is invalid."""


class CheckpointError(IncasemError):
    """A model checkpoint is corrupt, unsafe or of an unexpected architecture."""


class ModelNotFoundError(IncasemError):
    """A model name, id or path does not resolve to a checkpoint."""


class RunError(IncasemError):
    """A training run folder, run id or run checkpoint is missing, damaged or ill-named."""


class DownloadError(IncasemError):
    """A download failed or its content did not verify."""


class SchedulerError(IncasemError):
    """A Dask scheduler cannot be reached."""


class OutputExistsError(IncasemError):
    """An output file (a picture, a report) exists already and overwriting it was not asked for."""


class PortInUseError(IncasemError):
    """A network port that a server (the neuroglancer viewer) is asked to listen on is taken."""
