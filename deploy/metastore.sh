#!/usr/bin/env bash
# A PostgreSQL-backed Hive metastore, so that several Spark processes (the nightly, the SQL server,
# notebooks) can share one catalogue; the embedded Derby metastore admits one process at a time.
#
#   export REELRANK_METASTORE_PASSWORD=...     # never committed; conf/postgres.toml reads it too
#   deploy/metastore.sh start     # install if missing, initdb once, start, create db/user, Hive schema once
#   deploy/metastore.sh stop      # pg_ctl stop -m fast
#   deploy/metastore.sh status    # running? how many metastore tables?
#   deploy/metastore.sh install   # only the Debian packages (postgresql, libpostgresql-jdbc-java)
#
# Settings from the environment (defaults in brackets):
#   REELRANK_METASTORE_PORT [55432]   TCP port on 127.0.0.1 (conf/postgres.toml's URL uses 55432)
#   REELRANK_METASTORE_DIR  [/var/lib/reelrank/metastore]  holds data/ (the cluster), run/ (socket), postgres.log
#   REELRANK_METASTORE_DB   [metastore]   REELRANK_METASTORE_USER [metastore]
#   REELRANK_PG_OS_USER     [postgres]    the OS user owning the cluster when run as root (initdb refuses root)
#   REELRANK_JDBC_JAR       [/usr/share/java/postgresql.jar]
#
# The Hive schema is created once with DataNucleus SchemaTool (from pyspark's jars). Never let Spark create
# it lazily (datanucleus.schema.autoCreateAll=true): the first partitioned saveAsTable then deadlocks.
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
port=${REELRANK_METASTORE_PORT:-55432}
dir=${REELRANK_METASTORE_DIR:-/var/lib/reelrank/metastore}
db=${REELRANK_METASTORE_DB:-metastore}
user=${REELRANK_METASTORE_USER:-metastore}
os_user=${REELRANK_PG_OS_USER:-postgres}
jdbc_jar=${REELRANK_JDBC_JAR:-/usr/share/java/postgresql.jar}
python=${RR_PYTHON:-${RR_VENV:-$here/.venv}/bin/python}
pgdata=$dir/data
sockdir=$dir/run
logfile=$dir/postgres.log

say() { echo "metastore: $*" >&2; }
die() { say "$*"; exit 1; }
now() { date +%s.%N; }
took() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

pg_bin() {
  if [ -n "${REELRANK_PG_BIN:-}" ]; then echo "$REELRANK_PG_BIN"; return; fi
  ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1
}

# Run a command as the cluster's owner: postgres when we are root, else ourselves.
as_owner() {
  if [ "$(id -u)" = 0 ]; then runuser -u "$os_user" -- "$@"; else "$@"; fi
}

installed() { local b; b=$(pg_bin); [ -n "$b" ] && [ -x "$b/initdb" ] && [ -f "$jdbc_jar" ]; }

cmd_install() {
  if installed; then say "postgresql ($(pg_bin)) and $jdbc_jar already installed"; return; fi
  [ "$(id -u)" = 0 ] || die "postgresql or $jdbc_jar missing; install them as root: apt-get install postgresql libpostgresql-jdbc-java"
  command -v apt-get >/dev/null || die "postgresql or $jdbc_jar missing and apt-get is not available"
  local t0; t0=$(now)
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq -o DPkg::Lock::Timeout=300 postgresql libpostgresql-jdbc-java >/dev/null
  installed || die "apt-get finished but $(pg_bin)/initdb or $jdbc_jar is still missing"
  say "installed postgresql and libpostgresql-jdbc-java in $(took "$t0") s"
}

running() { [ -f "$pgdata/PG_VERSION" ] && as_owner "$(pg_bin)/pg_ctl" -D "$pgdata" status >/dev/null 2>&1; }

psql_admin() {  # psql as the superuser over the unix socket (peer authentication)
  as_owner "$(pg_bin)/psql" -h "$sockdir" -p "$port" -X -q -At -v ON_ERROR_STOP=1 "$@"
}

cmd_init() {
  mkdir -p "$dir"
  if [ "$(id -u)" = 0 ]; then chown "$os_user:" "$dir"; fi
  chmod 700 "$dir"
  as_owner test -w "$dir" || die "$os_user cannot write $dir (is a parent directory closed to it?); set REELRANK_METASTORE_DIR"
  as_owner mkdir -p "$sockdir"
  if [ ! -f "$pgdata/PG_VERSION" ]; then
    local t0; t0=$(now)
    as_owner "$(pg_bin)/initdb" -D "$pgdata" -E UTF8 --locale=C --auth-local=peer --auth-host=scram-sha-256 >/dev/null
    say "initdb $pgdata in $(took "$t0") s"
  fi
}

cmd_start_server() {
  if running; then say "already running ($pgdata)"; return; fi
  local t0; t0=$(now)
  as_owner "$(pg_bin)/pg_ctl" -D "$pgdata" -l "$logfile" -w -t 120 \
    -o "-p $port -k $sockdir -c listen_addresses=127.0.0.1" start >/dev/null 9>&-  # the server must not keep our lock
  say "postgres started on 127.0.0.1:$port in $(took "$t0") s (log $logfile)"
}

cmd_database() {
  [ -n "${REELRANK_METASTORE_PASSWORD:-}" ] || die "set REELRANK_METASTORE_PASSWORD (the metastore user's password)"
  # The password is read from the environment by psql itself, so it never appears on a command line.
  psql_admin -d postgres -v u="$user" -v db="$db" <<'SQL'
\getenv pw REELRANK_METASTORE_PASSWORD
SELECT count(*) = 0 AS need_role FROM pg_roles WHERE rolname = :'u' \gset
\if :need_role
CREATE ROLE :"u" LOGIN PASSWORD :'pw';
\else
ALTER ROLE :"u" LOGIN PASSWORD :'pw';
\endif
SELECT count(*) = 0 AS need_db FROM pg_database WHERE datname = :'db' \gset
\if :need_db
CREATE DATABASE :"db" OWNER :"u";
\endif
SQL
}

metastore_tables() { psql_admin -d "$db" -c "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"; }

cmd_schema() {
  if [ "$(psql_admin -d "$db" -c "SELECT count(*) FROM pg_tables WHERE schemaname = 'public' AND tablename = 'TBLS'")" != 0 ]; then
    say "Hive schema already in $db ($(metastore_tables) tables)"
    return
  fi
  local spark_home jar work t0 java=java
  spark_home=${SPARK_HOME:-$("$python" -c 'import os, pyspark; print(os.path.dirname(pyspark.__file__))')}
  jar=$(ls "$spark_home"/jars/hive-metastore-*.jar | head -n 1)
  work=$(mktemp -d)
  # package.jdo (the metastore's object model) from Hive's jar; the connection settings as a properties file
  # readable by us only (the password comes from the environment).
  (umask 077; "$python" - "$jar" "$work" "jdbc:postgresql://127.0.0.1:$port/$db" "$user" <<'PY'
import os, sys, zipfile
jar, work, url, user = sys.argv[1:]
with zipfile.ZipFile(jar) as z, open(os.path.join(work, "package.jdo"), "wb") as out:
    out.write(z.read("package.jdo"))
def esc(v: str) -> str:
    return v.replace("\\", "\\\\").replace("\n", "\\n").replace("=", "\\=").replace(":", "\\:")
props = {
    "javax.jdo.option.ConnectionURL": url,
    "javax.jdo.option.ConnectionDriverName": "org.postgresql.Driver",
    "javax.jdo.option.ConnectionUserName": user,
    "javax.jdo.option.ConnectionPassword": os.environ["REELRANK_METASTORE_PASSWORD"],
    "datanucleus.identifierFactory": "datanucleus1",
    "datanucleus.rdbms.useLegacyNativeValueStrategy": "true",
    "datanucleus.storeManagerType": "rdbms",
}
with open(os.path.join(work, "dn.properties"), "w") as out:
    out.writelines(f"{k}={esc(v)}\n" for k, v in props.items())
PY
  )
  t0=$(now)
  if [ -n "${JAVA_HOME:-}" ]; then java=$JAVA_HOME/bin/java; fi
  if ! "$java" -cp "$spark_home/jars/*:$jdbc_jar" org.datanucleus.store.schema.SchemaTool \
      -create -api JDO -props "$work/dn.properties" "$work/package.jdo" >"$work/schematool.log" 2>&1; then
    tail -n 30 "$work/schematool.log" >&2
    rm -rf "$work"
    die "SchemaTool failed"
  fi
  rm -rf "$work"
  [ "$(psql_admin -d "$db" -c "SELECT count(*) FROM pg_tables WHERE schemaname = 'public' AND tablename = 'TBLS'")" != 0 ] \
    || die "SchemaTool ran but created no TBLS table in $db"
  say "Hive schema created with SchemaTool in $(took "$t0") s ($(metastore_tables) tables)"
}

cmd_start() {
  cmd_install
  mkdir -p "$dir"
  exec 9>"$dir/.start.lock"   # one start at a time for this directory
  flock -w 600 9 || die "another 'metastore.sh start' holds $dir/.start.lock"
  cmd_init
  cmd_start_server
  cmd_database
  cmd_schema
  say "ready: jdbc:postgresql://127.0.0.1:$port/$db (user $user)"
}

cmd_stop() {
  if running; then
    as_owner "$(pg_bin)/pg_ctl" -D "$pgdata" -m fast -w -t 120 stop >/dev/null
    say "stopped ($pgdata)"
  else
    say "not running ($pgdata)"
  fi
}

cmd_status() {
  if running; then
    say "running on 127.0.0.1:$port ($pgdata), $(metastore_tables) tables in $db"
  else
    say "not running ($pgdata)"; exit 3
  fi
}

case "${1:-}" in
  install) cmd_install ;;
  start) cmd_start ;;
  stop) installed || die "postgresql not installed"; cmd_stop ;;
  status) installed || die "postgresql not installed"; cmd_status ;;
  *) echo "usage: $0 install|start|stop|status   (settings: see the top of this file)" >&2; exit 2 ;;
esac
