"""spark-submit entry point: the evaluate stage of the nightly pipeline (see `reelrank stage evaluate --help`)."""

import sys

from reelrank.cli.bootstrap import run_job

if __name__ == "__main__":
    sys.exit(run_job("evaluate"))
