"""``python -m xbq`` is the same as the ``xbq`` command."""

import sys

from xbq.cli import main

sys.exit(main())
