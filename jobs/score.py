"""spark-submit entry point: the score stage of the nightly pipeline (see `reelrank stage score --help`)."""

import sys

from reelrank.cli.bootstrap import run_job

if __name__ == "__main__":
    sys.exit(run_job("score"))
