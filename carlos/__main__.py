"""``python -m carlos``: the command line."""

from carlos.cli.main import main

raise SystemExit(main())
