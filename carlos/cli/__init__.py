"""The command line, one module per command group; shared helpers in :mod:`carlos.cli.common`.

Entry point: :func:`carlos.cli.main.main` (``python -m carlos``).
"""
