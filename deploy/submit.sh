#!/usr/bin/env bash
# Submit the nightly (or one stage, or tune) with spark-submit, using the settings of a reelrank config.
#   deploy/submit.sh [options] CONFIG JOB [job args...]
#   deploy/submit.sh conf/cluster.toml nightly --date 2026-11-23
#   deploy/submit.sh --master 'local[1]' conf/local.toml ingest --date 2026-11-23
# JOB is nightly, tune or a stage (ingest, matrix, neighbours, candidates, features, train, score, evaluate,
# publish). Options:
#   --master URL        local[N], spark://host:7077, yarn, k8s://https://host:443 (default: $SPARK_MASTER, else
#                       the config's [spark] master)
#   --deploy-mode MODE  client (default) or cluster (YARN/Kubernetes: the driver runs on the cluster and reads
#                       the config shipped with --files)
#   --env TARBALL       the packed Python environment for executors (make package builds dist/reelrank-env.tar.gz;
#                       default $RR_ENV_ARCHIVE); without it executors use the driver's interpreter path
#   --dry-run           print the spark-submit line and stop
# The spark-submit line is printed (shell-quoted, ready to paste) before it runs. Settings come from
# `reelrank spark-conf --null`, one NUL-separated argument each, so a value with spaces stays one argument.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
usage="usage: deploy/submit.sh [--master URL] [--deploy-mode client|cluster] [--env TARBALL] [--dry-run] CONFIG JOB [job args...]"
master=${SPARK_MASTER:-} deploy_mode=client env_archive=${RR_ENV_ARCHIVE:-} dry_run=0
while [ $# -gt 0 ]; do
  case $1 in
    --master) master=${2:?$usage}; shift 2 ;;
    --deploy-mode) deploy_mode=${2:?$usage}; shift 2 ;;
    --env) env_archive=${2:?$usage}; shift 2 ;;
    --dry-run) dry_run=1; shift ;;
    -h|--help) echo "$usage"; exit 0 ;;
    -*) echo "deploy/submit.sh: unknown option $1" >&2; echo "$usage" >&2; exit 2 ;;
    *) break ;;
  esac
done
config=${1:?$usage}
job=${2:?$usage}
shift 2
[ -f "$config" ] || { echo "deploy/submit.sh: config file not found: $config" >&2; exit 2; }
venv=${RR_VENV:-$here/.venv}
driver_python=$venv/bin/python
[ -x "$driver_python" ] || { echo "deploy/submit.sh: no Python environment at $venv (make install, or set RR_VENV)" >&2; exit 2; }
spark_submit=${SPARK_SUBMIT:-$venv/bin/spark-submit}
# pyspark's own spark-submit finds its home with whatever python3 is on PATH; tell it instead
[ -n "${SPARK_HOME:-}" ] || export SPARK_HOME=$("$driver_python" -c 'import os, pyspark; print(os.path.dirname(pyspark.__file__))')
# the job files installed with reelrank (the source tree's jobs/ in a development install)
jobs_dir=$("$driver_python" -c 'import os, reelrank.jobs; print(os.path.dirname(reelrank.jobs.__file__))')
script=$jobs_dir/$job.py
[ -f "$script" ] || { echo "deploy/submit.sh: no job $job (expected $script)" >&2; exit 2; }

# the job's --data-dir decides the warehouse, metastore and event log locations in these settings too
data_dir=()
for ((i = 1; i <= $#; i++)); do
  case ${!i} in
    --data-dir) j=$((i + 1)); data_dir=(--data-dir "${!j}") ;;
    --data-dir=*) data_dir=(--data-dir "${!i#--data-dir=}") ;;
  esac
done
mapfile -d '' -t settings < <("$driver_python" -m reelrank.cli spark-conf --null --config "$config" "${data_dir[@]}")
[ "${#settings[@]}" -gt 0 ] || { echo "deploy/submit.sh: reelrank spark-conf printed nothing for $config" >&2; exit 2; }
args=()
for ((i = 0; i < ${#settings[@]}; i += 2)); do
  if [ "${settings[i]}" = --master ] && [ -n "$master" ]; then
    args+=(--master "$master")
  else
    args+=("${settings[i]}" "${settings[i + 1]}")
  fi
done
args+=(--deploy-mode "$deploy_mode" --files "$config")
if [ -n "$env_archive" ]; then
  [ -f "$env_archive" ] || { echo "deploy/submit.sh: packed environment not found: $env_archive (make package)" >&2; exit 2; }
  args+=(--archives "$(cd "$(dirname "$env_archive")" && pwd)/$(basename "$env_archive")#env"
         --conf spark.pyspark.python=./env/bin/python)
else
  args+=(--conf "spark.pyspark.python=$driver_python")  # executors on this machine, or with the same path
fi
[ "$deploy_mode" = client ] && args+=(--conf "spark.pyspark.driver.python=$driver_python")
# a cluster-mode driver finds the shipped config in its working directory
job_config=$config
[ "$deploy_mode" = cluster ] && job_config=$(basename "$config")
args+=("$script" --config "$job_config" "$@")

echo "spark-submit line: $(printf '%q ' "$spark_submit" "${args[@]}")" >&2
[ "$dry_run" = 1 ] && exit 0
unset PYSPARK_PYTHON PYSPARK_DRIVER_PYTHON  # they would override the spark.pyspark.* settings above
exec "$spark_submit" "${args[@]}"
