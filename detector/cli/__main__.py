"""`python -m detector.cli`: the same as the `mamori` command."""

from __future__ import annotations

import sys

from detector.cli.app import main

sys.exit(main())
