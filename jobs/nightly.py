"""spark-submit entry point: the nightly stage of the nightly pipeline (see `reelrank nightly --help`)."""

import sys

from reelrank.cli.bootstrap import run_job

if __name__ == "__main__":
    sys.exit(run_job("nightly"))
