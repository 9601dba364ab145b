"""The exception tree of incasem.

Every error a user can cause derives from :class:`IncasemError`. Its message is one
line that says what is wrong, where (file, dataset or key) and what to do about it.
Only the command line catches these: it prints the message and exits with status 1
(the traceback is shown with ``--debug``).
"""

from __future__ import annotations


class IncasemError(Exception):
    """Base class of all errors caused by user input or the environment."""


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
