#!/usr/bin/env bash
# Build what a cluster needs (make package): the reelrank wheel and a packed, non-editable Python environment
# for executors (spark-submit --archives dist/reelrank-env.tar.gz#env, spark.pyspark.python=./env/bin/python).
#   deploy/build.sh [DIST_DIR]     (default dist/)
# The environment is a fresh venv with the CPU torch wheel and the reelrank wheel (venv-pack refuses the
# editable install that `make run` makes). Its interpreter is a link to this machine's python3.11, which
# executors must have at the same path (true of this machine's workers; the Dockerfile's image installs the
# wheel itself and needs no tarball).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
dist=$(mkdir -p "${1:-$here/dist}" && cd "${1:-$here/dist}" && pwd)
python=${PYTHON:-python3.11}
dev_venv=${RR_VENV:-$here/.venv}
started=$(date +%s)

rm -f "$dist"/reelrank-*.whl
"$dev_venv/bin/pip" wheel -q --no-deps -w "$dist" "$here"
wheel=$(ls "$dist"/reelrank-*.whl)

env_dir=$(mktemp -d "${TMPDIR:-/tmp}/reelrank-env-XXXXXX")
trap 'rm -rf "$env_dir"' EXIT
"$python" -m venv "$env_dir"
"$env_dir/bin/pip" install -q --upgrade pip
"$env_dir/bin/pip" install -q torch==2.13.0
"$env_dir/bin/pip" install -q "$wheel"
rm -f "$dist/reelrank-env.tar.gz"
"$dev_venv/bin/venv-pack" -q -p "$env_dir" -o "$dist/reelrank-env.tar.gz"

seconds=$(( $(date +%s) - started ))
echo "built $(basename "$wheel") ($(du -h "$wheel" | cut -f1)) and reelrank-env.tar.gz ($(du -h "$dist/reelrank-env.tar.gz" | cut -f1)) in $dist in ${seconds} s"
