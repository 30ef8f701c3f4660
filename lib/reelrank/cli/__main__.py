"""``python -m reelrank.cli``: the same command as ``reelrank``."""

from reelrank.cli.main import main

raise SystemExit(main())
