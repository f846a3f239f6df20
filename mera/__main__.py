"""``python -m mera``: the ``mera`` command (mera/cli)."""

import sys

from .cli import main

sys.exit(main())
