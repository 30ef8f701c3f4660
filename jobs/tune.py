"""spark-submit entry point: grid-search ALS hyper-parameters into {database}.tuning (see `reelrank tune --help`)."""

import sys

from reelrank.cli.bootstrap import run_job

if __name__ == "__main__":
    sys.exit(run_job("tune"))
