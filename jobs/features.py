"""spark-submit entry point: the features stage of the nightly pipeline (see `reelrank stage features --help`)."""

import sys

from reelrank.cli.bootstrap import run_job

if __name__ == "__main__":
    sys.exit(run_job("features"))
