#!/usr/bin/env bash
# Submit the nightly (or one stage) with spark-submit, using the settings of a reelrank config.
#   deploy/submit.sh conf/cluster.toml nightly --date 2026-11-23
# On a cluster the executors need the same Python environment: pack it once with venv-pack
# (pip install venv-pack; venv-pack -p .venv -o reelrank-env.tar.gz) and set RR_ENV_ARCHIVE.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
config=${1:?usage: deploy/submit.sh CONFIG STAGE [job args...]}
stage=${2:?usage: deploy/submit.sh CONFIG STAGE [job args...]}
shift 2
venv=${RR_VENV:-$here/.venv}
spark_submit=${SPARK_SUBMIT:-$venv/bin/spark-submit}
mapfile -t opts < <("$venv/bin/reelrank" spark-conf --config "$config" | tr ' ' '\n')
if [ -n "${RR_ENV_ARCHIVE:-}" ]; then
  opts+=(--archives "$RR_ENV_ARCHIVE#env" --conf spark.pyspark.python=./env/bin/python
         --conf "spark.pyspark.driver.python=$venv/bin/python")
fi
exec "$spark_submit" "${opts[@]}" "$here/jobs/$stage.py" --config "$config" "$@"
