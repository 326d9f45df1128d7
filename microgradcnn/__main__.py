"""``python -m microgradcnn``: the same command line as the ``microgradcnn`` console script."""

from microgradcnn.cli import main

raise SystemExit(main())
