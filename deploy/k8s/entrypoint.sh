#!/usr/bin/env bash
# The image's entry point (deploy/Dockerfile). Spark on Kubernetes starts its pods with a first argument of
# "driver" or "executor" and expects the image to turn it into a command, as Apache Spark's own images do; the
# pyspark pip package has the jars (spark-kubernetes among them) but not that script, so here it is.
# Anything else runs as given:  docker run --rm reelrank:0.1.0 reelrank --help
set -euo pipefail

case "${1:-}" in
  driver)
    # The pod's own spark-submit, in client mode inside the driver pod; the operator's arguments follow.
    shift
    exec "$SPARK_HOME/bin/spark-submit" --deploy-mode client \
      --conf "spark.driver.bindAddress=$SPARK_DRIVER_BIND_ADDRESS" \
      --conf "spark.executorEnv.SPARK_DRIVER_POD_IP=$SPARK_DRIVER_BIND_ADDRESS" \
      "$@"
    ;;
  executor)
    # Spark passes the executor's settings as environment variables (SPARK_EXECUTOR_*, SPARK_JAVA_OPT_<n>).
    shift
    java_opts=()
    for name in "${!SPARK_JAVA_OPT_@}"; do java_opts+=("${!name}"); done
    classpath="${SPARK_CLASSPATH:+$SPARK_CLASSPATH:}${SPARK_CONF_DIR:-$SPARK_HOME/conf}:$SPARK_HOME/jars/*:$PWD"
    exec "$JAVA_HOME/bin/java" "${java_opts[@]}" \
      -Xms"$SPARK_EXECUTOR_MEMORY" -Xmx"$SPARK_EXECUTOR_MEMORY" -cp "$classpath" \
      org.apache.spark.scheduler.cluster.k8s.KubernetesExecutorBackend \
      --driver-url "$SPARK_DRIVER_URL" --executor-id "$SPARK_EXECUTOR_ID" --cores "$SPARK_EXECUTOR_CORES" \
      --app-id "$SPARK_APPLICATION_ID" --hostname "$SPARK_EXECUTOR_POD_IP" \
      --resourceProfileId "$SPARK_RESOURCE_PROFILE_ID" --podName "$SPARK_EXECUTOR_POD_NAME"
    ;;
  *)
    exec "$@"
    ;;
esac
