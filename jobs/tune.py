"""spark-submit entry point: grid-search ALS hyper-parameters on {database}.interactions into {database}.tuning."""

import argparse
import sys

from reelrank.cli import add_common, setup_logging, start_session
from reelrank.tune import run_tuning


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="reelrank tune", description="Tune ALS rank / regParam / alpha on a holdout.")
    add_common(p)
    args = p.parse_args(argv)
    setup_logging(args.verbose)
    if (started := start_session(args)) is None:
        return 2
    cfg, spark = started
    try:
        chosen = run_tuning(spark, cfg)
        print(" ".join(f"{k}={v:g}" for k, v in chosen.items()))
        return 0
    except ValueError as e:
        print(f"reelrank: {e}", file=sys.stderr)
        return 1
    finally:
        spark.stop()


if __name__ == "__main__":
    sys.exit(main())
