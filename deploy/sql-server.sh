#!/usr/bin/env bash
# SQL access for data engineers: the Spark Thrift Server over the warehouse, next to the nightly.
# Needs a metastore shared with the nightly (deploy/metastore.sh start, conf/postgres.toml).
#
#   export REELRANK_METASTORE_PASSWORD=...
#   deploy/sql-server.sh start   [CONFIG] [--port 10010] [--data-dir DIR]   # background; waits until it answers
#   deploy/sql-server.sh stop    [CONFIG] [--port 10010] [--data-dir DIR]
#   deploy/sql-server.sh status  [--port 10010]
#   deploy/sql-server.sh query   "SELECT ..." [--port 10010]                 # CSV on stdout
#   deploy/sql-server.sh beeline [--port 10010]                              # an interactive session
# CONFIG defaults to conf/postgres.toml. JDBC clients (DBeaver, ...) use jdbc:hive2://127.0.0.1:10010 and
# any user name; the server listens on loopback only and has no authentication.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
venv=${RR_VENV:-$here/.venv}
usage="usage: deploy/sql-server.sh start|stop|status|query|beeline [CONFIG] [options]"
action=${1:?$usage}
shift

case "$action" in
  start|stop)
    config=$here/conf/postgres.toml
    if [ $# -gt 0 ] && [ "${1#-}" = "$1" ]; then config=$1; shift; fi
    exec "$venv/bin/python" -m reelrank.warehouse.sqlserver "$action" --config "$config" "$@" ;;
  status|query)
    exec "$venv/bin/python" -m reelrank.warehouse.sqlserver "$action" "$@" ;;
  beeline)
    port=10010
    while [ $# -gt 0 ]; do
      case "$1" in
        --port) port=$2; shift 2 ;;
        --port=*) port=${1#--port=}; shift ;;
        *) echo "$usage" >&2; exit 2 ;;
      esac
    done
    spark_home=${SPARK_HOME:-$("$venv/bin/python" -c 'import os, pyspark; print(os.path.dirname(pyspark.__file__))')}
    exec "$spark_home/bin/beeline" -u "jdbc:hive2://127.0.0.1:$port" -n "$(id -un)" ;;
  *) echo "$usage" >&2; exit 2 ;;
esac
