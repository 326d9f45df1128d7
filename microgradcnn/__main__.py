"""``python -m microgradcnn``: the same command line as the ``microgradcnn`` console script."""

import sys

try:
    from microgradcnn.cli import main
except KeyboardInterrupt:  # Ctrl-C while the command starts up: one line, as main() reports it later
    print("microgradcnn: interrupted", file=sys.stderr)
    raise SystemExit(130) from None

raise SystemExit(main())
