"""``python -m infra`` is the ``waferstream`` command (used to spawn services)."""

from infra.cli import main

main()
