"""``python -m carlos``: the command line."""

from carlos.cli import main

raise SystemExit(main())
