#!/usr/bin/env bash
# A local, single-node Apache Kafka (KRaft, combined broker+controller) for tests and CI.
#
#   kafka.sh start      fetch the jars if needed, format storage once, start, wait until it answers
#   kafka.sh stop       controlled shutdown (SIGTERM), SIGKILL if it has not exited in time
#   kafka.sh restart    stop + start; the data directory is kept (topics, offsets, records)
#   kafka.sh status     running or not (exit 0 when it runs and answers, 3 when stopped)
#   kafka.sh bootstrap  print the bootstrap address, e.g. 127.0.0.1:19092
#   kafka.sh logs [N]   the last N lines (default 100) of the broker's server.log
#   kafka.sh fetch      only fetch the jars (Maven Central, official org.apache.kafka artifacts)
#   kafka.sh reset      stop and delete the data directory (the jars stay cached)
#
# Environment (all optional):
#   SHOPCAST_KAFKA_VERSION       Apache Kafka version (default 4.1.1; any 4.x on Maven Central)
#   SHOPCAST_KAFKA_PORT          client port on 127.0.0.1 (default 19092)
#   SHOPCAST_KAFKA_CONTROLLER_PORT  KRaft controller port (default: client port + 1)
#   SHOPCAST_KAFKA_CACHE         where the jars go (default ${XDG_CACHE_HOME:-$HOME/.cache}/shopcast/kafka-VERSION)
#   SHOPCAST_KAFKA_DATA_DIR      config, logs, pid and KRaft data (default CACHE/node-PORT)
#   SHOPCAST_KAFKA_HEAP_OPTS     JVM heap (default -Xms256m -Xmx512m)
#   SHOPCAST_KAFKA_JVM_OPTS      more JVM options (-XX:TieredStopAtLevel=1: faster start, slower broker)
#   SHOPCAST_KAFKA_START_TIMEOUT seconds to wait for the broker to answer (default 120)
#   SHOPCAST_KAFKA_STOP_TIMEOUT  seconds to wait for a controlled shutdown before SIGKILL (default 30)
#   SHOPCAST_KAFKA_MAVEN_REPO    a Maven local repository to use instead of ~/.m2/repository
#   SHOPCAST_PYTHON              a Python with aiokafka for the readiness probe (default: the repo's .venv)
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
VERSION="${SHOPCAST_KAFKA_VERSION:-4.1.1}"
PORT="${SHOPCAST_KAFKA_PORT:-19092}"
CONTROLLER_PORT="${SHOPCAST_KAFKA_CONTROLLER_PORT:-$((PORT + 1))}"
CACHE="${SHOPCAST_KAFKA_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/shopcast/kafka-$VERSION}"
LIBS="$CACHE/libs"
DATA="${SHOPCAST_KAFKA_DATA_DIR:-$CACHE/node-$PORT}"
HEAP_OPTS="${SHOPCAST_KAFKA_HEAP_OPTS:--Xms256m -Xmx512m}"
# Full JIT by default: C1 only (-XX:TieredStopAtLevel=1) halves the start time on 2 busy cores
# but also roughly halves how fast a Python consumer can read from the broker (measured 82k/s vs
# 140k/s), which would skew benchmarks. Set it for quick throwaway brokers.
JVM_OPTS="${SHOPCAST_KAFKA_JVM_OPTS-}"
START_TIMEOUT="${SHOPCAST_KAFKA_START_TIMEOUT:-120}"
STOP_TIMEOUT="${SHOPCAST_KAFKA_STOP_TIMEOUT:-30}"
BOOTSTRAP="127.0.0.1:$PORT"
PIDFILE="$DATA/kafka.pid"
LOGDIR="$DATA/logs"
CONFIG="$DATA/server.properties"
# base64url("shopcast-local-1"): a fixed, valid KRaft cluster id (16 bytes).
CLUSTER_ID="c2hvcGNhc3QtbG9jYWwtMQ"

say() { echo "kafka.sh: $*" >&2; }
die() { say "$*"; exit 1; }

# --- jars -----------------------------------------------------------------------------------

fetch() {
  [ -f "$LIBS/.complete" ] && return 0
  command -v mvn >/dev/null || die "Maven (mvn) is not installed; it fetches the Kafka jars (apt-get install maven)"
  mkdir -p "$CACHE"
  exec 8>"$CACHE/.fetch.lock"
  flock 8
  [ -f "$LIBS/.complete" ] && return 0   # another kafka.sh fetched it while we waited
  say "fetching Apache Kafka $VERSION jars from Maven Central into $LIBS"
  local started=$SECONDS tmp="$CACHE/libs.partial"
  rm -rf "$tmp"
  local repo_opt=()
  [ -n "${SHOPCAST_KAFKA_MAVEN_REPO:-}" ] && repo_opt=("-Dmaven.repo.local=$SHOPCAST_KAFKA_MAVEN_REPO")
  if ! mvn -q -B -f "$HERE/pom.xml" "${repo_opt[@]}" -Dkafka.version="$VERSION" \
      dependency:copy-dependencies -DoutputDirectory="$tmp" >"$CACHE/fetch.log" 2>&1; then
    tail -n 30 "$CACHE/fetch.log" >&2
    die "could not fetch Apache Kafka $VERSION with Maven (full output: $CACHE/fetch.log)"
  fi
  ls "$tmp"/kafka_2.13-"$VERSION".jar >/dev/null 2>&1 || die "Maven ran but kafka_2.13-$VERSION.jar is missing in $tmp"
  rm -rf "$LIBS"
  mv "$tmp" "$LIBS"
  touch "$LIBS/.complete"
  say "fetched $(ls "$LIBS" | wc -l) jars ($(du -sh "$LIBS" | cut -f1)) in $((SECONDS - started)) s"
}

java_cmd() {
  command -v java >/dev/null || die "Java is not installed; Apache Kafka $VERSION needs Java 17 or newer"
  echo java
}

# --- process --------------------------------------------------------------------------------

running_pid() {
  # The broker's pid when the pid file names a live process that is this broker, else nothing.
  [ -f "$PIDFILE" ] || return 1
  local pid
  pid="$(cat "$PIDFILE" 2>/dev/null)" || return 1
  [ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ] || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q -- "kafka.Kafka $CONFIG" || return 1
  echo "$pid"
}

port_open() {
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

python_bin() {
  local candidate
  for candidate in "${SHOPCAST_PYTHON:-}" "$REPO/.venv/bin/python" python3; do
    [ -n "$candidate" ] || continue
    if command -v "$candidate" >/dev/null && "$candidate" -c "import aiokafka" 2>/dev/null; then
      echo "$candidate"
      return 0
    fi
  done
  return 1
}

answers() {
  # A real Kafka request: metadata must list this broker. Without a Python that has aiokafka,
  # the broker's own "Kafka Server started" line and an open port have to do.
  local py
  if py="$(python_bin)"; then
    "$py" - "$BOOTSTRAP" <<'PY' >/dev/null 2>&1
import asyncio, sys
from aiokafka import AIOKafkaClient

async def probe(bootstrap):
    client = AIOKafkaClient(bootstrap_servers=bootstrap, request_timeout_ms=5000)
    try:
        await asyncio.wait_for(client.bootstrap(), 10)
        return bool(client.cluster.brokers())
    finally:
        await client.close()

sys.exit(0 if asyncio.run(probe(sys.argv[1])) else 1)
PY
  else
    port_open "$PORT"
  fi
}

write_config() {
  mkdir -p "$DATA/kraft" "$LOGDIR"
  cat >"$CONFIG" <<EOF
# Written by deploy/kafka-local/kafka.sh on every start: edit the script, not this file.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$CONTROLLER_PORT
listeners=PLAINTEXT://127.0.0.1:$PORT,CONTROLLER://127.0.0.1:$CONTROLLER_PORT
advertised.listeners=PLAINTEXT://127.0.0.1:$PORT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs=$DATA/kraft

# shopcast creates its topics up front (shopcast topics create); a typo must fail, not invent a topic.
auto.create.topics.enable=false
num.partitions=1
default.replication.factor=1
min.insync.replicas=1

# One node: every internal topic has one replica. Fewer partitions than the defaults (50) make
# the first group join and the first transaction quicker on a small machine.
offsets.topic.replication.factor=1
offsets.topic.num.partitions=10
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=10
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0

# Small segments and an eager cleaner, so tests can watch a changelog get compacted
# (a topic still needs a short segment.ms: the active segment is never cleaned).
log.segment.bytes=1048576
log.index.size.max.bytes=1048576
log.cleaner.enable=true
log.cleaner.threads=1
log.cleaner.backoff.ms=500
log.cleaner.min.cleanable.ratio=0.01
log.cleaner.dedupe.buffer.size=16777216
log.retention.check.interval.ms=10000

# Hostile-input tests send values far over the 64 KiB event limit (10 MB); let them reach shopcast.
message.max.bytes=16777216
replica.fetch.max.bytes=16777216

# Two cores: few threads.
num.network.threads=2
num.io.threads=4
background.threads=4
num.recovery.threads.per.data.dir=1
EOF
}

start() {
  local java pid started=$SECONDS
  fetch
  mkdir -p "$DATA"
  exec 9>"$DATA/.lock"
  flock 9
  if pid="$(running_pid)"; then
    if wait_ready "$pid" 30; then
      say "already running (pid $pid) at $BOOTSTRAP"
      return 0
    fi
    die "a broker runs (pid $pid) but does not answer at $BOOTSTRAP; see: $0 logs"
  fi
  if port_open "$PORT"; then
    die "port $PORT on 127.0.0.1 is taken by another process; set SHOPCAST_KAFKA_PORT to a free port"
  fi
  if port_open "$CONTROLLER_PORT"; then
    die "controller port $CONTROLLER_PORT is taken; set SHOPCAST_KAFKA_CONTROLLER_PORT to a free port"
  fi
  java="$(java_cmd)"
  write_config
  local jvm=(-cp "$LIBS/*" -Dlog4j2.configurationFile="$HERE/log4j2.properties"
             -Dkafka.logs.dir="$LOGDIR" -Djava.awt.headless=true)
  if [ ! -f "$DATA/kraft/meta.properties" ]; then
    "$java" -Xmx256m "${jvm[@]}" kafka.tools.StorageTool format \
      --cluster-id "$CLUSTER_ID" --config "$CONFIG" --ignore-formatted >"$LOGDIR/format.log" 2>&1 \
      || { cat "$LOGDIR/format.log" >&2; die "formatting the KRaft storage in $DATA/kraft failed"; }
  fi
  # The broker must not inherit the lock fds (8, 9), or it would hold the lock until it exits.
  # shellcheck disable=SC2086  # HEAP_OPTS holds several options
  setsid "$java" $HEAP_OPTS $JVM_OPTS -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:+ExitOnOutOfMemoryError \
    "${jvm[@]}" kafka.Kafka "$CONFIG" >>"$LOGDIR/stdout.log" 2>&1 </dev/null 8>&- 9>&- &
  pid=$!
  echo "$pid" >"$PIDFILE"
  if ! wait_ready "$pid" "$START_TIMEOUT"; then
    tail -n 40 "$LOGDIR/server.log" "$LOGDIR/stdout.log" >&2 2>/dev/null || true
    stop_pid "$pid"
    die "Apache Kafka $VERSION did not answer at $BOOTSTRAP within $START_TIMEOUT s (logs: $LOGDIR)"
  fi
  say "Apache Kafka $VERSION running (pid $pid) at $BOOTSTRAP, ready in $((SECONDS - started)) s; data in $DATA"
}

wait_ready() {
  local pid=$1 timeout=$2 deadline=$((SECONDS + $2))
  while [ $SECONDS -lt $deadline ]; do
    if [ ! -d "/proc/$pid" ]; then
      say "the broker process exited during start"
      return 1
    fi
    if port_open "$PORT" && answers; then
      return 0
    fi
    sleep 0.5
  done
  say "no answer after $timeout s"
  return 1
}

stop_pid() {
  local pid=$1 deadline=$((SECONDS + STOP_TIMEOUT))
  kill -TERM "$pid" 2>/dev/null || return 0
  while [ -d "/proc/$pid" ] && [ $SECONDS -lt $deadline ]; do sleep 0.2; done
  if [ -d "/proc/$pid" ]; then
    say "no controlled shutdown within $STOP_TIMEOUT s; sending SIGKILL to $pid"
    kill -KILL "$pid" 2>/dev/null || true
    while [ -d "/proc/$pid" ]; do sleep 0.1; done
  fi
}

stop() {
  mkdir -p "$DATA"
  exec 9>"$DATA/.lock"
  flock 9
  local pid
  if pid="$(running_pid)"; then
    stop_pid "$pid"
    say "stopped (pid $pid)"
  else
    say "not running"
  fi
  rm -f "$PIDFILE"
}

status() {
  local pid
  if pid="$(running_pid)"; then
    if answers; then
      echo "running: Apache Kafka $VERSION, pid $pid, bootstrap $BOOTSTRAP, data $DATA"
      return 0
    fi
    echo "running but not answering: Apache Kafka $VERSION, pid $pid, bootstrap $BOOTSTRAP"
    return 1
  fi
  echo "stopped: Apache Kafka $VERSION, bootstrap $BOOTSTRAP, data $DATA"
  return 3
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  restart) stop; start ;;
  status) status ;;
  bootstrap) echo "$BOOTSTRAP" ;;
  logs) [ -f "$LOGDIR/server.log" ] || die "no log yet: $LOGDIR/server.log"
        tail -n "${2:-100}" "$LOGDIR/server.log" ;;
  fetch) fetch; echo "$LIBS" ;;
  reset) stop; rm -rf "$DATA"; say "deleted $DATA" ;;
  version) echo "$VERSION" ;;
  *) echo "usage: $0 start|stop|restart|status|bootstrap|logs [N]|fetch|reset|version" >&2; exit 2 ;;
esac
