"""``python -m client``: the same command line as ``s1-client``."""

import sys

from client.cli import main

sys.exit(main())
