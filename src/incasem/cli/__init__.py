"""The ``incasem`` command: one subcommand per workflow step, each a thin shell over the API.

Each module of this package registers the commands of one workflow step on
:data:`incasem.cli.app.app`. :func:`main` turns an :class:`~incasem.errors.IncasemError`
(or a failing file operation) into one line on stderr and exit status 1; ``--debug``
shows the traceback instead.
"""

from incasem.cli.app import app, main

# Importing the command modules registers their commands on ``app``, in this order, which is
# the order ``incasem --help`` lists them in: keep it, not the alphabetical one.
# isort: off
from incasem.cli import data as _data  # noqa: F401
from incasem.cli import equalize as _equalize  # noqa: F401
from incasem.cli import convert as _convert  # noqa: F401
from incasem.cli import masks as _masks  # noqa: F401
from incasem.cli import models as _models  # noqa: F401
from incasem.cli import runs as _runs  # noqa: F401
from incasem.cli import predict as _predict  # noqa: F401
from incasem.cli import train as _train  # noqa: F401
from incasem.cli import evaluate as _evaluate  # noqa: F401
from incasem.cli import postprocess as _postprocess  # noqa: F401
from incasem.cli import view as _view  # noqa: F401
from incasem.cli import preview as _preview  # noqa: F401
from incasem.cli import download as _download  # noqa: F401
from incasem.cli import pyramid as _pyramid  # noqa: F401
from incasem.cli import demo as _demo  # noqa: F401
# isort: on

__all__ = ["app", "main"]
