"""``python -m marginloss``: the ``marginloss`` command (see :mod:`marginloss.cli`)."""

import sys

from marginloss.cli import main

if __name__ == "__main__":
    sys.exit(main())
