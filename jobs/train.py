"""spark-submit entry point: the train stage of the nightly pipeline (see `reelrank stage train --help`)."""

import sys

from reelrank.cli.bootstrap import run_job

if __name__ == "__main__":
    sys.exit(run_job("train"))
