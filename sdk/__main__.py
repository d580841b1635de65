"""``python -m sdk``: the same as the ``chromaforge`` command."""

from sdk.cli import main

raise SystemExit(main())
