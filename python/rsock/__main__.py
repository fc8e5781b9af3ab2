"""The ``rsock`` command line: ``python -m rsock <command>`` (the ``rsock`` console script runs the same main()).

See ``python -m rsock --help``; the commands live in ``rsock._cli``.
"""

import sys

from rsock._cli import main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
