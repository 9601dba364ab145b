"""``python -m incasem`` and the ``incasem`` command: the command line.

:func:`run` catches a Ctrl-C that comes while the (heavy) command modules are still
being imported, so that it too exits with status 130 and no traceback.
"""

import sys


def run() -> None:
    """Entry point of the ``incasem`` command."""
    try:
        from incasem.cli import main
    except KeyboardInterrupt:
        sys.stderr.write("incasem: interrupted\n")
        sys.exit(130)
    sys.exit(main())


if __name__ == "__main__":
    run()
