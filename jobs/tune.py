"""spark-submit entry point: grid-search ALS hyper-parameters on {database}.interactions into {database}.tuning."""

import argparse
import sys

from reelrank.cli import add_common, run_in_session
from reelrank.tune import run_tuning


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="reelrank tune", description="Tune ALS rank / regParam / alpha on a holdout.")
    add_common(p)
    args = p.parse_args(argv)

    def body(cfg, spark) -> int:
        chosen = run_tuning(spark, cfg)
        print(" ".join(f"{k}={v:g}" for k, v in chosen.items()))
        return 0

    return run_in_session(args, body, (ValueError,))


if __name__ == "__main__":
    sys.exit(main())
