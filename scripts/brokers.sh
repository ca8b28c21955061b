#!/usr/bin/env bash
# scripts/brokers.sh - run real RabbitMQ and Kafka brokers, and PostgreSQL, locally, without Docker.
#
# Usage:
#   scripts/brokers.sh up      rabbitmq|kafka|postgres|all   install/resolve if needed, start,
#                                                            wait until ready
#   scripts/brokers.sh down    rabbitmq|kafka|postgres|all   stop cleanly
#   scripts/brokers.sh restart rabbitmq|kafka|postgres|all   down, then up
#   (up, down and restart take several targets; each also takes rabbitmq-spare: a second
#   RabbitMQ node, AMQP 5673, management 15673, that the broker-restart test restarts; `all`
#   does not include it)
#   scripts/brokers.sh status [rabbitmq|kafka|postgres|all]  say what runs (exit 0 only if all
#                                                            asked for run)
#   scripts/brokers.sh resolve-kafka               only download Kafka's jars (cached)
#   scripts/brokers.sh kafka-class MAIN [ARGS...]  run a Kafka main class with Kafka's jars
#                                                  (used by scripts/kafka-topics etc.)
#
# `up` is a fast no-op (exit 0) for a broker that already runs.
#
# RabbitMQ: Debian's rabbitmq-server package (apt-get install when missing; services are not
#   started by the package because there is no systemd), started as a detached node, with the
#   management plugin. guest/guest works from 127.0.0.1. The node this script starts keeps its
#   database and logs in $CAMPUSFOOD_BROKERS_DIR/rabbitmq/node, so a clean checkout starts from
#   an empty broker. A node that already runs (the system's own, say) is used as it is.
# Kafka: Apache Kafka 4.x jars resolved from Maven Central with Maven (scripts/kafka/pom.xml)
#   into $CAMPUSFOOD_BROKERS_DIR/kafka/dist/<version>/libs (cached), run as a single-node KRaft
#   broker+controller with the machine's Java 17+.
# PostgreSQL: Debian's postgresql package (apt-get install when missing; its own cluster is not
#   started), a cluster of this checkout's own in $CAMPUSFOOD_BROKERS_DIR/postgres/data (or, when
#   the postgres user cannot reach that, /var/lib/postgresql/campusfood/<hash>/data), run with the
#   newest installed version's pg_ctl as the postgres OS user, on 127.0.0.1 only, server log in
#   <data>/postgres.log. Role campusfood, password campusfood, owns database campusfood:
#   postgres://campusfood:campusfood@127.0.0.1:5432/campusfood. A server that already answers
#   on the port is used as it is; `up` creates the role and database in it when they are missing
#   (possible in our cluster, or another local one through its socket as the postgres user).
#
# Environment (defaults in brackets):
#   CAMPUSFOOD_BROKERS_DIR    runtime dir: jars, config, data, logs, pid [<repo>/.brokers]
#   KAFKA_VERSION             Kafka version to resolve [4.3.1]
#   KAFKA_PORT                PLAINTEXT listener on 127.0.0.1 [9092]
#   KAFKA_CONTROLLER_PORT     KRaft controller listener on 127.0.0.1 [9093]
#   KAFKA_NUM_PARTITIONS      partitions of auto-created topics [1]
#   KAFKA_HEAP_OPTS           broker heap [-Xms256m -Xmx1g]
#   KAFKA_TOOLS_OPTS          extra JVM options for the command-line tools []
#   RABBITMQ_PORT             AMQP port (also read from RABBITMQ_NODE_PORT) [5672]
#   RABBITMQ_MANAGEMENT_PORT  management HTTP port [15672]
#   RABBITMQ_NODENAME         the main node's name [rabbit]
#   POSTGRES_PORT             PostgreSQL port on 127.0.0.1 [5432]
#   BROKERS_START_TIMEOUT     seconds to wait for a broker to become ready [180]
#   BROKERS_STOP_TIMEOUT      seconds to wait for a broker to stop [60]
#   JAVA_HOME                 Java to use (else `java` on PATH; needs 17+)
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$SCRIPT_DIR/.." && pwd)
# rabbitmq-server, rabbitmqctl & co. live in /usr/sbin; PostgreSQL's programs are found in
# /usr/lib/postgresql/<version>/bin.
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"

BROKERS_DIR=${CAMPUSFOOD_BROKERS_DIR:-$REPO_ROOT/.brokers}
START_TIMEOUT=${BROKERS_START_TIMEOUT:-180}
STOP_TIMEOUT=${BROKERS_STOP_TIMEOUT:-60}
HOST=127.0.0.1

KAFKA_VERSION=${KAFKA_VERSION:-4.3.1}
KAFKA_PORT=${KAFKA_PORT:-9092}
KAFKA_CONTROLLER_PORT=${KAFKA_CONTROLLER_PORT:-9093}
KAFKA_NUM_PARTITIONS=${KAFKA_NUM_PARTITIONS:-1}
KAFKA_HEAP_OPTS=${KAFKA_HEAP_OPTS:--Xms256m -Xmx1g}
KAFKA_TOOLS_OPTS=${KAFKA_TOOLS_OPTS:-}
KAFKA_POM=$SCRIPT_DIR/kafka/pom.xml
KAFKA_DIR=$BROKERS_DIR/kafka
KAFKA_DIST=$KAFKA_DIR/dist/$KAFKA_VERSION
KAFKA_LIBS=$KAFKA_DIST/libs
KAFKA_PROPS=$KAFKA_DIR/server.properties
KAFKA_DATA=$KAFKA_DIR/data
KAFKA_LOGS=$KAFKA_DIR/logs
KAFKA_PIDFILE=$KAFKA_DIR/kafka.pid
KAFKA_OUT=$KAFKA_LOGS/kafka.out

# The RabbitMQ node the rabbitmq_* functions act on; rabbitmq_select switches to another one.
rabbitmq_select() { # label node-name amqp-port management-port
  RABBITMQ_LABEL=$1
  RABBITMQ_NODE=$2
  RABBITMQ_PORT=$3
  RABBITMQ_MANAGEMENT_PORT=$4
  RABBITMQ_DIR=$BROKERS_DIR/$1
  RABBITMQ_OUT=$RABBITMQ_DIR/rabbitmq-server.out
  RABBITMQ_NODE_BASE=$RABBITMQ_DIR/node # see rabbitmq_prepare_data
  RABBITMQ_LOG_BASE=$RABBITMQ_NODE_BASE/log
}
rabbitmq_select rabbitmq "${RABBITMQ_NODENAME:-rabbit}" "${RABBITMQ_PORT:-${RABBITMQ_NODE_PORT:-5672}}" \
  "${RABBITMQ_MANAGEMENT_PORT:-15672}"
# The spare node: a second, separate broker that the broker-restart test stops and starts
# while the tests sharing the main node carry on. Its ports are the Rust tests' as well.
SPARE_NODE=campusfood-spare
SPARE_PORT=5673
SPARE_MANAGEMENT_PORT=15673

POSTGRES_PORT=${POSTGRES_PORT:-5432}
PG_ROLE=campusfood
PG_PASSWORD=campusfood
PG_DATABASE=campusfood
PG_DIR=$BROKERS_DIR/postgres
PG_DATA=$PG_DIR/data         # see postgres_locate_data
PG_LOG=$PG_DATA/postgres.log # the server's log (pg_ctl -l), and pg_ctl's own output
PG_BIN=""                    # /usr/lib/postgresql/<version>/bin, see postgres_select_bin

JAVA=""

# ---------------------------------------------------------------------------------------------
# helpers

log() { printf '[brokers] %s\n' "$*" >&2; }

die() {
  printf '[brokers] ERROR: %s\n' "$*" >&2
  exit 1
}

# Print the last lines of each existing file to stderr.
show_tail() {
  local f
  for f in "$@"; do
    [[ -s $f ]] || continue
    printf '[brokers] ---- last lines of %s ----\n' "$f" >&2
    tail -n 40 "$f" >&2 || true
    printf '[brokers] ----\n' >&2
  done
}

# Run a command as root (directly, or through passwordless sudo).
as_root() {
  if [[ $EUID -eq 0 ]]; then
    "$@"
  elif command -v sudo >/dev/null 2>&1; then
    sudo -n "$@"
  else
    die "need root (or passwordless sudo) to run: $*"
  fi
}
# The same, as a command prefix for a background launch.
AS_ROOT=()
[[ $EUID -eq 0 ]] || AS_ROOT=(sudo -n)

# Brokers keep a file open per queue or partition; the usual 1,024 descriptors run out after
# a few thousand, and a broker that cannot reopen them stalls or dies at start.
FD_LIMIT=65536
raise_fd_limit() {
  ulimit -Hn "$FD_LIMIT" 2>/dev/null || true
  ulimit -n "$FD_LIMIT" 2>/dev/null || ulimit -n "$(ulimit -Hn)"
}

# Is a TCP port accepting connections?
port_open() {
  # shellcheck disable=SC2016 # expanded by the inner shell
  timeout 3 bash -c 'exec 3<>"/dev/tcp/$1/$2"' _ "$1" "$2" >/dev/null 2>&1
}

# Does a Kafka broker answer on host:port? Sends a raw ApiVersions request (v0, correlation id 42)
# and checks the response echoes the correlation id: cheap, no JVM.
kafka_probe() {
  local out
  # shellcheck disable=SC2016 # expanded by the inner shell
  out=$(timeout 3 bash -c '
    exec 3<>"/dev/tcp/$1/$2" || exit 1
    printf "\x00\x00\x00\x0c\x00\x12\x00\x00\x00\x00\x00\x2a\x00\x02cf" >&3
    head -c 8 <&3 | od -An -tx1
  ' _ "$1" "$2" 2>/dev/null) || return 1
  out=${out//[[:space:]]/}
  [[ $out =~ ^[0-9a-f]{8}0000002a$ ]]
}

# Serialise concurrent runs (two shells running `up` at once) on a lock file. The lock is held
# until this script exits; daemons must not inherit it (see close_lock_fds).
LOCK_FDS=()
take_lock() { # name
  mkdir -p "$BROKERS_DIR"
  local fd
  exec {fd}>"$BROKERS_DIR/.$1.lock"
  LOCK_FDS+=("$fd")
  if ! flock -w 900 "$fd"; then
    die "timed out waiting for lock $BROKERS_DIR/.$1.lock (another brokers.sh running?)"
  fi
}
close_lock_fds() {
  local fd
  for fd in "${LOCK_FDS[@]}"; do
    exec {fd}>&-
  done
}

APT_UPDATED=0
# apt-get install, noninteractive, without letting packages start services (no systemd here).
apt_install() {
  mkdir -p "$BROKERS_DIR"
  local aptlog=$BROKERS_DIR/apt.log
  log "installing with apt-get: $* (log: $aptlog)"
  (
    policy=/usr/sbin/policy-rc.d
    if [[ ! -e $policy ]]; then
      # invoke-rc.d asks policy-rc.d; 101 = "action forbidden": the postinst won't start it.
      printf '#!/bin/sh\nexit 101\n' | as_root tee "$policy" >/dev/null
      as_root chmod 755 "$policy"
      trap 'as_root rm -f "$policy"' EXIT
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt_opts=(-o DPkg::Lock::Timeout=600 -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold)
    if [[ $APT_UPDATED -eq 0 ]]; then
      as_root env DEBIAN_FRONTEND=noninteractive apt-get "${apt_opts[@]}" update
    fi
    as_root env DEBIAN_FRONTEND=noninteractive apt-get "${apt_opts[@]}" install -y --no-install-recommends "$@"
  ) >"$aptlog" 2>&1 || {
    show_tail "$aptlog"
    die "apt-get install $* failed"
  }
  APT_UPDATED=1
}

# Wait until "$@" succeeds, or die after $1 seconds. Usage: wait_for SECS WHAT CMD...
wait_for() {
  local secs=$1 what=$2
  shift 2
  local deadline=$((SECONDS + secs))
  until "$@"; do
    if ((SECONDS >= deadline)); then
      return 1
    fi
    sleep 1
  done
  log "$what: ready after $((secs - (deadline - SECONDS)))s"
}

# ---------------------------------------------------------------------------------------------
# Java and Maven

java_major() { # prints the major version of "$1"
  local v
  v=$("$1" -version 2>&1 | sed -n 's/.*version "\([^"]*\)".*/\1/p' | head -n 1)
  v=${v#1.}
  printf '%s\n' "${v%%[.+-]*}"
}

ensure_java() {
  [[ -n $JAVA ]] && return 0
  local candidate=""
  if [[ -n ${JAVA_HOME:-} && -x $JAVA_HOME/bin/java ]]; then
    candidate=$JAVA_HOME/bin/java
  elif command -v java >/dev/null 2>&1; then
    candidate=$(command -v java)
  fi
  if [[ -n $candidate ]] && (($(java_major "$candidate") >= 17)); then
    JAVA=$candidate
    return 0
  fi
  local arch jdk
  arch=$(dpkg --print-architecture 2>/dev/null || echo amd64)
  jdk=/usr/lib/jvm/java-17-openjdk-$arch/bin/java
  if [[ ! -x $jdk ]]; then
    apt_install openjdk-17-jre-headless
  fi
  [[ -x $jdk ]] || die "no Java 17+ found (tried ${candidate:-java on PATH} and $jdk)"
  JAVA=$jdk
}

ensure_maven() {
  command -v mvn >/dev/null 2>&1 && return 0
  apt_install maven
  command -v mvn >/dev/null 2>&1 || die "maven installed but mvn not on PATH"
}

# ---------------------------------------------------------------------------------------------
# Kafka

pom_hash() { sha256sum "$KAFKA_POM" | cut -d' ' -f1; }

kafka_resolved() {
  [[ -f $KAFKA_DIST/.complete && $(cat "$KAFKA_DIST/.complete") == "$(pom_hash)" ]]
}

# Download Kafka's jars (broker, tools, runtime deps, log4j2 binding) once; later calls are free.
resolve_kafka() {
  kafka_resolved && return 0
  take_lock kafka-resolve
  kafka_resolved && return 0 # someone else did it while we waited
  ensure_java
  ensure_maven
  mkdir -p "$KAFKA_DIR/dist"
  local tmp=$KAFKA_DIST.tmp.$$ mvnlog=$KAFKA_DIR/dist/mvn-$KAFKA_VERSION.log
  rm -rf "$tmp"
  log "resolving Apache Kafka $KAFKA_VERSION from Maven Central (log: $mvnlog)"
  local t0=$SECONDS
  if ! JAVA_HOME=$(dirname "$(dirname "$(readlink -f "$JAVA")")") \
    mvn -B -q -Dstyle.color=never -f "$KAFKA_POM" \
    dependency:copy-dependencies \
    -Dkafka.version="$KAFKA_VERSION" -DincludeScope=runtime \
    -DoutputDirectory="$tmp/libs" >"$mvnlog" 2>&1; then
    show_tail "$mvnlog"
    rm -rf "$tmp"
    die "could not resolve Kafka $KAFKA_VERSION with Maven (is KAFKA_VERSION a published version?)"
  fi
  local jar
  for jar in "kafka_2.13-$KAFKA_VERSION.jar" "kafka-tools-$KAFKA_VERSION.jar" "kafka-clients-$KAFKA_VERSION.jar"; do
    [[ -f $tmp/libs/$jar ]] || die "Maven finished but $jar is missing from $tmp/libs"
  done
  rm -rf "$KAFKA_DIST"
  mv "$tmp" "$KAFKA_DIST"
  pom_hash >"$KAFKA_DIST/.complete"
  log "Kafka $KAFKA_VERSION: $(find "$KAFKA_LIBS" -name '*.jar' | wc -l) jars in $KAFKA_LIBS ($((SECONDS - t0))s)"
}

# The java command line that runs a Kafka main class (a tool); its logs (WARN+) go to stderr.
KAFKA_TOOL_CMD=()
kafka_tool_cmd() { # MAIN
  # shellcheck disable=SC2206 # word-splitting of KAFKA_TOOLS_OPTS is intended
  KAFKA_TOOL_CMD=("$JAVA" -Xmx512m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -Djava.awt.headless=true
    $KAFKA_TOOLS_OPTS "-Dlog4j2.configurationFile=$SCRIPT_DIR/kafka/tools-log4j2.properties"
    -cp "$KAFKA_LIBS/*" "$1")
}
kafka_tool() { # MAIN [ARGS...]
  kafka_tool_cmd "$1"
  shift
  "${KAFKA_TOOL_CMD[@]}" "$@"
}

# Is process $1 our broker (java ... kafka.Kafka $KAFKA_PROPS)?
is_our_kafka() {
  local -a args
  mapfile -d '' -t args 2>/dev/null <"/proc/$1/cmdline" || return 1
  ((${#args[@]} >= 3)) && [[ ${args[0]##*/} == java ]] || return 1
  [[ ${args[-2]} == kafka.Kafka && ${args[-1]} == "$KAFKA_PROPS" ]]
}

# The pid of the broker started from this BROKERS_DIR, if it runs.
kafka_pid() {
  local pid p
  if [[ -f $KAFKA_PIDFILE ]]; then
    pid=$(cat "$KAFKA_PIDFILE")
    if [[ $pid =~ ^[0-9]+$ ]] && is_our_kafka "$pid"; then
      echo "$pid"
      return 0
    fi
  fi
  # Pid file lost? Look for our broker by its command line.
  for p in /proc/[0-9]*; do
    if is_our_kafka "${p#/proc/}"; then
      echo "${p#/proc/}"
      return 0
    fi
  done
  return 1
}

write_kafka_config() {
  mkdir -p "$KAFKA_DATA" "$KAFKA_LOGS"
  cat >"$KAFKA_PROPS.tmp" <<EOF
# Generated by scripts/brokers.sh - edits are overwritten on the next 'up kafka'.
# Single-node KRaft: this node is both broker and controller.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@$HOST:$KAFKA_CONTROLLER_PORT
listeners=PLAINTEXT://$HOST:$KAFKA_PORT,CONTROLLER://$HOST:$KAFKA_CONTROLLER_PORT
advertised.listeners=PLAINTEXT://$HOST:$KAFKA_PORT
inter.broker.listener.name=PLAINTEXT
controller.listener.names=CONTROLLER
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT

log.dirs=$KAFKA_DATA
num.partitions=$KAFKA_NUM_PARTITIONS
auto.create.topics.enable=true
delete.topic.enable=true
default.replication.factor=1
min.insync.replicas=1

# Internal topics: one replica, and few partitions so the first consumer group is quick.
offsets.topic.replication.factor=1
offsets.topic.num.partitions=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0

num.network.threads=2
num.io.threads=4
num.recovery.threads.per.data.dir=1
log.retention.hours=24
log.segment.bytes=104857600
log.retention.check.interval.ms=300000
EOF
  mv "$KAFKA_PROPS.tmp" "$KAFKA_PROPS"
}

format_kafka_storage() {
  [[ -f $KAFKA_DATA/meta.properties ]] && return 0
  local id
  if [[ -s $KAFKA_DIR/cluster.id ]]; then
    id=$(cat "$KAFKA_DIR/cluster.id")
  else
    id=$(kafka_tool kafka.tools.StorageTool random-uuid 2>>"$KAFKA_OUT") ||
      { show_tail "$KAFKA_OUT"; die "kafka-storage random-uuid failed"; }
    echo "$id" >"$KAFKA_DIR/cluster.id"
  fi
  log "formatting Kafka storage $KAFKA_DATA (cluster id $id)"
  kafka_tool kafka.tools.StorageTool format --config "$KAFKA_PROPS" --cluster-id "$id" --ignore-formatted \
    >>"$KAFKA_OUT" 2>&1 || { show_tail "$KAFKA_OUT"; die "kafka-storage format failed"; }
}

kafka_up() {
  local pid
  if pid=$(kafka_pid); then
    if kafka_probe "$HOST" "$KAFKA_PORT"; then
      log "kafka: already running (pid $pid, $HOST:$KAFKA_PORT)"
      return 0
    fi
    log "kafka: pid $pid is starting; waiting"
  elif port_open "$HOST" "$KAFKA_PORT"; then
    if kafka_probe "$HOST" "$KAFKA_PORT"; then
      log "kafka: a broker not started from $BROKERS_DIR already answers on $HOST:$KAFKA_PORT; using it"
      return 0
    fi
    die "port $HOST:$KAFKA_PORT is in use by something that is not Kafka ($(ss -ltnpH "sport = :$KAFKA_PORT" 2>/dev/null | head -n 1))"
  else
    take_lock kafka-start
    if pid=$(kafka_pid); then
      log "kafka: pid $pid started meanwhile; waiting"
    else
      resolve_kafka
      ensure_java
      write_kafka_config
      format_kafka_storage
      if port_open "$HOST" "$KAFKA_CONTROLLER_PORT"; then
        die "controller port $HOST:$KAFKA_CONTROLLER_PORT is already in use (set KAFKA_CONTROLLER_PORT)"
      fi
      local -a jvm
      # shellcheck disable=SC2206 # word-splitting of the heap options is intended
      jvm=($KAFKA_HEAP_OPTS -server -XX:+UseG1GC -XX:MaxGCPauseMillis=20
        -XX:InitiatingHeapOccupancyPercent=35 -XX:+ExplicitGCInvokesConcurrent
        -Djava.awt.headless=true
        "-Dlog4j2.configurationFile=$SCRIPT_DIR/kafka/log4j2.properties"
        "-Dkafka.logs.dir=$KAFKA_LOGS")
      log "kafka: starting Kafka $KAFKA_VERSION on $HOST:$KAFKA_PORT (logs: $KAFKA_LOGS)"
      printf '\n==== %s starting kafka %s\n' "$(date -u +%FT%TZ)" "$KAFKA_VERSION" >>"$KAFKA_OUT"
      (
        cd "$KAFKA_DIR"
        close_lock_fds
        # Kafka keeps files open for every partition (the tests delete their topics, but a
        # killed run cannot).
        raise_fd_limit
        # New session, no terminal, all fds redirected: survives this script and never holds
        # the caller's stdout/stderr pipes open. The inner shell records its pid, then becomes java.
        # shellcheck disable=SC2016 # expanded by the inner shell
        nohup setsid bash -c 'echo $$ >"$0"; exec "$@"' "$KAFKA_PIDFILE" \
          "$JAVA" "${jvm[@]}" -cp "$KAFKA_LIBS/*" kafka.Kafka "$KAFKA_PROPS" \
          >>"$KAFKA_OUT" 2>&1 </dev/null &
      )
      local tries=0
      until [[ -s $KAFKA_PIDFILE ]] || ((++tries > 50)); do
        sleep 0.1
      done
      pid=$(cat "$KAFKA_PIDFILE" 2>/dev/null || true)
    fi
  fi

  local deadline=$((SECONDS + START_TIMEOUT)) t0=$SECONDS
  until kafka_probe "$HOST" "$KAFKA_PORT"; do
    if ! kill -0 "$pid" 2>/dev/null; then
      show_tail "$KAFKA_OUT" "$KAFKA_LOGS/server.log"
      die "kafka exited during startup (see $KAFKA_LOGS)"
    fi
    if ((SECONDS >= deadline)); then
      show_tail "$KAFKA_OUT" "$KAFKA_LOGS/server.log"
      die "kafka did not answer on $HOST:$KAFKA_PORT within ${START_TIMEOUT}s (pid $pid still running)"
    fi
    sleep 0.5
  done
  # The port answers; make sure the admin API works end to end (what clients and tests need).
  resolve_kafka
  ensure_java
  local err=$KAFKA_LOGS/ready-check.err
  until kafka_tool org.apache.kafka.tools.TopicCommand --bootstrap-server "$HOST:$KAFKA_PORT" --list >/dev/null 2>"$err"; do
    if ((SECONDS >= deadline)); then
      show_tail "$err" "$KAFKA_LOGS/server.log"
      die "kafka answers on $HOST:$KAFKA_PORT but 'kafka-topics --list' keeps failing"
    fi
    sleep 1
  done
  log "kafka: ready on $HOST:$KAFKA_PORT (pid $pid, Kafka $KAFKA_VERSION, $((SECONDS - t0))s)"
}

kafka_down() {
  local pid
  if ! pid=$(kafka_pid); then
    rm -f "$KAFKA_PIDFILE"
    if kafka_probe "$HOST" "$KAFKA_PORT"; then
      log "kafka: the broker on $HOST:$KAFKA_PORT was not started from $BROKERS_DIR; leaving it alone"
    else
      log "kafka: not running"
    fi
    return 0
  fi
  log "kafka: stopping pid $pid"
  kill -TERM "$pid" 2>/dev/null || true
  local deadline=$((SECONDS + STOP_TIMEOUT))
  while kill -0 "$pid" 2>/dev/null; do
    if ((SECONDS >= deadline)); then
      log "kafka: still running after ${STOP_TIMEOUT}s; sending SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
      sleep 1
      break
    fi
    sleep 0.5
  done
  rm -f "$KAFKA_PIDFILE"
  log "kafka: stopped"
}

kafka_status() {
  local pid
  if pid=$(kafka_pid) && kafka_probe "$HOST" "$KAFKA_PORT"; then
    echo "kafka: running (pid $pid, $HOST:$KAFKA_PORT, Kafka $KAFKA_VERSION, dir $KAFKA_DIR)"
  elif [[ -n ${pid:-} ]]; then
    echo "kafka: starting (pid $pid, not answering on $HOST:$KAFKA_PORT yet)"
    return 1
  elif kafka_probe "$HOST" "$KAFKA_PORT"; then
    echo "kafka: running on $HOST:$KAFKA_PORT (not started from $BROKERS_DIR)"
  else
    echo "kafka: not running"
    return 1
  fi
}

# ---------------------------------------------------------------------------------------------
# RabbitMQ

# This checkout's node keeps its database and logs in .brokers/rabbitmq, like Kafka: a clean
# clone starts from an empty broker, whatever an earlier run left in /var/lib/rabbitmq (a node
# that must recover thousands of durable queues can take minutes to boot). When the rabbitmq
# user cannot write there (a checkout in a private home directory), a directory of this
# checkout's own under /var/lib/rabbitmq/campusfood/ is used instead.
rabbitmq_prepare_data() {
  local base=$RABBITMQ_NODE_BASE
  if ! rabbitmq_user_can_write "$base"; then
    base=/var/lib/rabbitmq/campusfood/$(printf '%s' "$RABBITMQ_DIR" | sha256sum | cut -c1-16)
    rabbitmq_user_can_write "$base" || die "$RABBITMQ_LABEL: the rabbitmq user can write neither $RABBITMQ_NODE_BASE nor $base"
  fi
  RABBITMQ_NODE_BASE=$base
  RABBITMQ_LOG_BASE=$base/log
  log "$RABBITMQ_LABEL: node data in $base"
}

# Creates "$1" for the rabbitmq user; true if that user can write in it.
rabbitmq_user_can_write() {
  as_root mkdir -p "$1/mnesia" "$1/log" && as_root chown -R rabbitmq:rabbitmq "$1" &&
    as_root su rabbitmq -s /bin/sh -c "test -w $(printf '%q' "$1/mnesia") && test -w $(printf '%q' "$1/log")" 2>/dev/null
}

# Like `rabbitmq-server -detached`, but keeps the server's console output in a file, and with
# a file-descriptor limit of 65536: Debian's wrapper runs the node through `su`, whose PAM
# session resets the soft limit to 1024, and a node with fewer handles than durable queues
# stalls in recovery. New session, all fds redirected, so it never holds the caller's pipes.
rabbitmq_launch() {
  local server=/usr/lib/rabbitmq/bin/rabbitmq-server
  [[ -x $server ]] || die "$RABBITMQ_LABEL: $server not found (Debian's rabbitmq-server package expected)"
  # Ports and paths go into the command itself: `su`, or `sudo`, may not pass the environment.
  local inner
  inner="ulimit -n $FD_LIMIT 2>/dev/null || ulimit -n \$(ulimit -Hn); cd /var/lib/rabbitmq"
  inner+="; export RABBITMQ_NODENAME=$(printf '%q' "$RABBITMQ_NODE")"
  inner+="; export RABBITMQ_NODE_PORT=$(printf '%q' "$RABBITMQ_PORT")"
  inner+="; export RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS=$(printf '%q' "-rabbitmq_management tcp_config [{port,$RABBITMQ_MANAGEMENT_PORT}]")"
  inner+="; export RABBITMQ_MNESIA_BASE=$(printf '%q' "$RABBITMQ_NODE_BASE/mnesia")"
  inner+="; export RABBITMQ_LOG_BASE=$(printf '%q' "$RABBITMQ_LOG_BASE")"
  inner+="; exec $server"
  (
    close_lock_fds
    raise_fd_limit # the hard limit, which su keeps; the inner shell raises its soft one
    nohup setsid "${AS_ROOT[@]}" su rabbitmq -s /bin/sh -c "$inner" >>"$RABBITMQ_OUT" 2>&1 </dev/null &
    echo $! >"$RABBITMQ_DIR/launcher.pid"
  )
}

# Tests name their queues cftest-…; this policy deletes such a queue after ten idle minutes, so
# a test that fails before its teardown leaves nothing behind for long. Idempotent, one PUT.
rabbitmq_test_policy() {
  curl -fsS -o /dev/null -u guest:guest -X PUT -H 'content-type: application/json' \
    --data '{"pattern":"^cftest-","apply-to":"queues","definition":{"expires":600000}}' \
    "http://$HOST:$RABBITMQ_MANAGEMENT_PORT/api/policies/%2F/campusfood-test-queue-expiry" ||
    log "$RABBITMQ_LABEL: could not set the test-queue expiry policy (management API); continuing"
}

rabbitmq_installed() { command -v rabbitmq-server >/dev/null 2>&1 && command -v rabbitmqctl >/dev/null 2>&1; }
rabbitmq_ping() { timeout 60 rabbitmq-diagnostics -n "$RABBITMQ_NODE" -q ping >/dev/null 2>&1; }
rabbitmq_app_running() { timeout 60 rabbitmq-diagnostics -n "$RABBITMQ_NODE" -q check_running >/dev/null 2>&1; }
rabbitmq_ready() {
  port_open "$HOST" "$RABBITMQ_PORT" && port_open "$HOST" "$RABBITMQ_MANAGEMENT_PORT" && rabbitmq_app_running
}
rabbitmq_logs() {
  local f
  echo "$RABBITMQ_OUT"
  for f in "$RABBITMQ_LOG_BASE"/*.log /var/log/rabbitmq/rabbit@*.log; do
    [[ -f $f ]] && echo "$f"
  done | sort -u
}

rabbitmq_up() {
  if rabbitmq_installed && port_open "$HOST" "$RABBITMQ_PORT" && port_open "$HOST" "$RABBITMQ_MANAGEMENT_PORT" &&
    rabbitmq_app_running; then
    log "$RABBITMQ_LABEL: already running (amqp $HOST:$RABBITMQ_PORT, management http://$HOST:$RABBITMQ_MANAGEMENT_PORT/)"
    rabbitmq_test_policy
    return 0
  fi
  take_lock "$RABBITMQ_LABEL"
  mkdir -p "$RABBITMQ_DIR"
  rm -f "$RABBITMQ_DIR/launcher.pid"
  if ! rabbitmq_installed; then
    apt_install rabbitmq-server
    rabbitmq_installed || die "rabbitmq-server installed but not found on PATH"
  fi
  local t0=$SECONDS
  # Enable the management plugin in the enabled_plugins file (works whether or not the node runs).
  timeout 120 rabbitmq-plugins --offline enable rabbitmq_management >>"$RABBITMQ_OUT" 2>&1 ||
    { show_tail "$RABBITMQ_OUT"; die "rabbitmq-plugins enable rabbitmq_management failed"; }

  if rabbitmq_ping; then
    # The Erlang node runs. Make sure the app and the management plugin do as well.
    if ! rabbitmq_app_running; then
      log "$RABBITMQ_LABEL: node runs but the app is stopped; starting it"
      timeout 120 rabbitmqctl -n "$RABBITMQ_NODE" start_app >>"$RABBITMQ_OUT" 2>&1 || true
    fi
    if ! port_open "$HOST" "$RABBITMQ_MANAGEMENT_PORT"; then
      timeout 120 rabbitmq-plugins -n "$RABBITMQ_NODE" enable rabbitmq_management >>"$RABBITMQ_OUT" 2>&1 || true
    fi
  else
    if port_open "$HOST" "$RABBITMQ_PORT"; then
      die "port $HOST:$RABBITMQ_PORT is in use but the local RabbitMQ node does not answer ($(ss -ltnpH "sport = :$RABBITMQ_PORT" 2>/dev/null | head -n 1))"
    fi
    log "$RABBITMQ_LABEL: starting rabbitmq-server (amqp $HOST:$RABBITMQ_PORT, management $RABBITMQ_MANAGEMENT_PORT)"
    printf '\n==== %s starting rabbitmq-server\n' "$(date -u +%FT%TZ)" >>"$RABBITMQ_OUT"
    rabbitmq_prepare_data
    rabbitmq_launch
  fi

  local deadline=$((SECONDS + START_TIMEOUT))
  until rabbitmq_ready; do
    if ((SECONDS >= deadline)); then
      mapfile -t logs < <(rabbitmq_logs)
      show_tail "${logs[@]}"
      die "$RABBITMQ_LABEL did not become ready within ${START_TIMEOUT}s (amqp $HOST:$RABBITMQ_PORT, management $HOST:$RABBITMQ_MANAGEMENT_PORT)"
    fi
    if [[ -s $RABBITMQ_DIR/launcher.pid ]] && ! kill -0 "$(cat "$RABBITMQ_DIR/launcher.pid")" 2>/dev/null; then
      mapfile -t logs < <(rabbitmq_logs)
      show_tail "${logs[@]}"
      die "$RABBITMQ_LABEL: rabbitmq-server exited during startup"
    fi
    sleep 1
  done
  rabbitmq_test_policy
  log "$RABBITMQ_LABEL: ready (amqp $HOST:$RABBITMQ_PORT, management http://$HOST:$RABBITMQ_MANAGEMENT_PORT/, guest/guest; $((SECONDS - t0))s)"
}

rabbitmq_down() {
  if ! rabbitmq_installed; then
    log "$RABBITMQ_LABEL: not installed"
    return 0
  fi
  if ! rabbitmq_ping; then
    log "$RABBITMQ_LABEL: not running"
    return 0
  fi
  log "$RABBITMQ_LABEL: stopping"
  # `shutdown` waits until the node's OS process has exited; `stop` is the fallback.
  if ! timeout "$STOP_TIMEOUT" rabbitmqctl -n "$RABBITMQ_NODE" -q shutdown >>"$RABBITMQ_OUT" 2>&1; then
    timeout "$STOP_TIMEOUT" rabbitmqctl -n "$RABBITMQ_NODE" -q stop >>"$RABBITMQ_OUT" 2>&1 || true
  fi
  if rabbitmq_ping; then
    show_tail "$RABBITMQ_OUT"
    die "$RABBITMQ_LABEL: still running after rabbitmqctl shutdown/stop"
  fi
  log "$RABBITMQ_LABEL: stopped"
}

rabbitmq_status() {
  if ! rabbitmq_installed; then
    echo "$RABBITMQ_LABEL: not installed (scripts/brokers.sh up $RABBITMQ_LABEL installs it)"
    return 1
  fi
  if port_open "$HOST" "$RABBITMQ_PORT" && rabbitmq_app_running; then
    local mgmt="management not listening on $RABBITMQ_MANAGEMENT_PORT"
    port_open "$HOST" "$RABBITMQ_MANAGEMENT_PORT" && mgmt="management http://$HOST:$RABBITMQ_MANAGEMENT_PORT/"
    echo "$RABBITMQ_LABEL: running (amqp $HOST:$RABBITMQ_PORT, $mgmt, $(rabbitmqctl -n "$RABBITMQ_NODE" -q version 2>/dev/null || echo '?'))"
  elif rabbitmq_ping; then
    echo "$RABBITMQ_LABEL: node up but not ready (app stopped or still booting)"
    return 1
  else
    echo "$RABBITMQ_LABEL: not running"
    return 1
  fi
}

# ---------------------------------------------------------------------------------------------
# PostgreSQL

# Run CMD as the postgres OS user (initdb and pg_ctl refuse root), from / since that user may
# not be allowed into the current directory.
as_postgres() { # CMD [ARGS...]
  as_root su postgres -s /bin/bash -c "cd / && exec$(printf ' %q' "$@")"
}
# The same, appending the command's output to the server log, $PG_LOG.
as_postgres_logged() { # CMD [ARGS...]
  as_root su postgres -s /bin/bash -c "cd / && exec$(printf ' %q' "$@") >>$(printf '%q' "$PG_LOG") 2>&1 </dev/null"
}

# The newest /usr/lib/postgresql/<version>/bin that has all the programs named.
postgres_newest_bin() { # PROGRAM...
  local -a dirs
  local d p best=""
  mapfile -t dirs < <(printf '%s\n' /usr/lib/postgresql/*/bin | sort -V)
  for d in "${dirs[@]}"; do
    for p in "$@"; do
      [[ -x $d/$p ]] || continue 2
    done
    best=$d
  done
  [[ -n $best ]] && echo "$best"
}
# A client program (psql, pg_isready): the newest version's, else whatever is on PATH.
postgres_tool() { # NAME
  local d
  if d=$(postgres_newest_bin "$1"); then
    echo "$d/$1"
  else
    command -v "$1"
  fi
}
postgres_installed() { postgres_newest_bin initdb pg_ctl postgres psql pg_isready >/dev/null; }

# pg_isready's verdict on $HOST:$POSTGRES_PORT: 0 accepting connections, 1 rejecting them
# (starting up, shutting down), 2 no answer; 127 when pg_isready is not installed.
postgres_answers() {
  local bin
  bin=$(postgres_tool pg_isready) || return 127
  "$bin" -q -h "$HOST" -p "$POSTGRES_PORT" -t 3
}

# Can the campusfood role log in to its database over TCP, with its password? (What the tests
# do.) psql's error, if any, is left in $PG_DIR/login.err.
postgres_login() {
  local bin
  bin=$(postgres_tool psql) || return 1
  mkdir -p "$PG_DIR"
  PGPASSWORD=$PG_PASSWORD PGCONNECT_TIMEOUT=5 "$bin" -X -q -A -t -w -h "$HOST" -p "$POSTGRES_PORT" \
    -U "$PG_ROLE" -d "$PG_DATABASE" -c 'select 1' >/dev/null 2>"$PG_DIR/login.err"
}

# Serialises the postgres target's up and down. Whoever held it may have created the cluster
# meanwhile, so where it lives is looked up again.
PG_LOCKED=0
postgres_lock() { # once per run: `restart` takes it in down, then needs it again in up
  ((PG_LOCKED)) && return 0
  take_lock postgres
  PG_LOCKED=1
  postgres_locate_data
}

# This checkout's cluster lives in .brokers/postgres/data, like Kafka's data: a clean clone
# starts from an empty database. When the postgres user cannot reach that (a checkout in a
# private home directory), a directory of this checkout's own under
# /var/lib/postgresql/campusfood/ is used instead.
postgres_fallback_data() {
  echo "/var/lib/postgresql/campusfood/$(printf '%s' "$PG_DIR" | sha256sum | cut -c1-16)/data"
}
# Where an existing cluster is (the usual place, or the fallback); the usual place if none.
postgres_locate_data() {
  local fallback
  PG_DATA=$PG_DIR/data
  if ! as_root test -f "$PG_DATA/PG_VERSION"; then
    fallback=$(postgres_fallback_data)
    as_root test -f "$fallback/PG_VERSION" && PG_DATA=$fallback
  fi
  PG_LOG=$PG_DATA/postgres.log
}
# For a new cluster: pick and create a data directory that the postgres user can write.
postgres_prepare_data() {
  postgres_locate_data
  as_root test -f "$PG_DATA/PG_VERSION" && return 0
  if ! postgres_user_can_write "$PG_DATA"; then
    local fallback
    fallback=$(postgres_fallback_data)
    postgres_user_can_write "$fallback" ||
      die "postgres: the postgres user can write neither $PG_DATA nor $fallback"
    PG_DATA=$fallback
    PG_LOG=$PG_DATA/postgres.log
  fi
}
# Creates "$1" (mode 700) for the postgres user; true if that user can write in it.
postgres_user_can_write() {
  as_root mkdir -p "$1" && as_root chown postgres:postgres "$1" && as_root chmod 700 "$1" &&
    as_postgres test -w "$1" -a -x "$1" 2>/dev/null
}

# The binaries of the cluster's own major version (a data directory works only with those),
# or of the newest installed version for a new cluster.
postgres_select_bin() {
  local ver
  if ver=$(as_root cat "$PG_DATA/PG_VERSION" 2>/dev/null); then
    PG_BIN=/usr/lib/postgresql/$ver/bin
    [[ -x $PG_BIN/pg_ctl ]] ||
      die "postgres: $PG_DATA is a PostgreSQL $ver cluster, but $PG_BIN/pg_ctl is not installed (apt-get install postgresql-$ver, or delete $PG_DATA to start afresh)"
  else
    PG_BIN=$(postgres_newest_bin initdb pg_ctl postgres) || die "postgres: no /usr/lib/postgresql/<version>/bin/pg_ctl"
  fi
}
postgres_version() { as_root cat "$PG_DATA/PG_VERSION" 2>/dev/null || echo '?'; }

# Is process $1 this checkout's postmaster (a `postgres` whose working directory is $PG_DATA)?
is_our_postgres() {
  [[ $(cat "/proc/$1/comm" 2>/dev/null) == postgres ]] || return 1
  [[ $(as_root readlink -f "/proc/$1/cwd" 2>/dev/null) == "$(as_root readlink -f "$PG_DATA")" ]]
}
# The pid of the postmaster of this checkout's cluster, if it runs.
postgres_pid() {
  local pid
  pid=$(as_root head -n 1 "$PG_DATA/postmaster.pid" 2>/dev/null) || return 1
  [[ $pid =~ ^[0-9]+$ ]] && is_our_postgres "$pid" && echo "$pid"
}
# A line of our postmaster.pid: 4 is the port, 5 the unix socket directory.
postgres_pidfile_line() { as_root sed -n "${1}p" "$PG_DATA/postmaster.pid" 2>/dev/null; }

postgres_initdb() {
  as_root test -f "$PG_DATA/PG_VERSION" && return 0
  local out=$PG_DIR/initdb.log
  log "postgres: creating a PostgreSQL $(basename "$(dirname "$PG_BIN")") cluster in $PG_DATA (log: $out)"
  # Local (socket) connections: peer, i.e. only the postgres OS user as the superuser; TCP:
  # passwords. The UTF8 encoding with the C locale is what any client expects and sorts bytewise.
  if ! as_postgres "$PG_BIN/initdb" -D "$PG_DATA" --username=postgres --encoding=UTF8 --locale=C \
    --auth-local=peer --auth-host=scram-sha-256 >"$out" 2>&1; then
    show_tail "$out"
    die "postgres: initdb failed"
  fi
}

write_postgres_config() {
  # The socket goes into the data directory (no /var/run/postgresql needed), unless that path is
  # too long for a unix socket (107 bytes).
  local sockdir=$PG_DATA
  ((${#PG_DATA} + 20 <= 107)) || sockdir=/tmp
  as_postgres tee "$PG_DATA/campusfood.conf" >/dev/null <<EOC
# Generated by scripts/brokers.sh - edits are overwritten on the next 'up postgres'.
# Included at the end of postgresql.conf, so these settings win.
listen_addresses = '$HOST'
port = $POSTGRES_PORT
unix_socket_directories = '$sockdir'

# Tests run several processes, each with a connection pool.
max_connections = 200
shared_buffers = 128MB
# Durable, like a real server: tests must not pass thanks to lost writes.
fsync = on
synchronous_commit = on
full_page_writes = on

password_encryption = 'scram-sha-256'
timezone = 'UTC'
log_timezone = 'UTC'
logging_collector = off
log_line_prefix = '%m [%p] %q%u@%d '
EOC
  as_root grep -qxF "include 'campusfood.conf'" "$PG_DATA/postgresql.conf" ||
    printf "\n# Added by scripts/brokers.sh\ninclude 'campusfood.conf'\n" |
    as_postgres tee -a "$PG_DATA/postgresql.conf" >/dev/null
  as_postgres tee "$PG_DATA/pg_hba.conf" >/dev/null <<EOC
# Generated by scripts/brokers.sh - edits are overwritten on the next 'up postgres'.
# TYPE  DATABASE  USER  ADDRESS        METHOD
local   all       all                  peer
host    all       all   127.0.0.1/32   scram-sha-256
EOC
}

# Make sure role $PG_ROLE (password $PG_PASSWORD) and its database $PG_DATABASE exist, and that
# the role can log in over TCP. Creating them takes the superuser: the postgres OS user over the
# server's unix socket (our cluster's, or another local server's in its usual directories).
postgres_ensure_db() {
  postgres_login && return 0
  postgres_lock
  postgres_login && return 0 # someone else created them while we waited
  local sock="" d ours=0 psql
  if postgres_pid >/dev/null && [[ $(postgres_pidfile_line 4) == "$POSTGRES_PORT" ]]; then
    ours=1
    sock=$(postgres_pidfile_line 5)
  else
    for d in /var/run/postgresql /tmp; do
      if [[ -S $d/.s.PGSQL.$POSTGRES_PORT ]]; then
        sock=$d
        break
      fi
    done
  fi
  local where="the PostgreSQL on $HOST:$POSTGRES_PORT (not started from $BROKERS_DIR)"
  ((ours)) && where="our PostgreSQL on $HOST:$POSTGRES_PORT ($PG_DATA)"
  local sql="CREATE ROLE $PG_ROLE LOGIN CREATEDB PASSWORD '$PG_PASSWORD'; CREATE DATABASE $PG_DATABASE OWNER $PG_ROLE;"
  local out=$PG_DIR/ensure-db.log
  psql=$(postgres_tool psql) || die "postgres: psql not found"
  if [[ -z $sock ]]; then
    die "postgres: role $PG_ROLE cannot log in to database $PG_DATABASE on $where ($(head -n 1 "$PG_DIR/login.err")), and this script has no local socket to create them through. Create them as a superuser ($sql), or stop that server and run scripts/brokers.sh up postgres."
  fi
  log "postgres: creating role $PG_ROLE and database $PG_DATABASE if missing, on $where"
  # shellcheck disable=SC2016 # :'role' & co. are psql variables
  if ! as_postgres "$psql" -X -q -w -v ON_ERROR_STOP=1 -h "$sock" -p "$POSTGRES_PORT" -U postgres -d postgres \
    -v role="$PG_ROLE" -v pw="$PG_PASSWORD" -v db="$PG_DATABASE" >"$out" 2>&1 <<'EOSQL'; then
SELECT format('CREATE ROLE %I LOGIN CREATEDB PASSWORD %L', :'role', :'pw')
  WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'role') \gexec
SELECT format('ALTER ROLE %I LOGIN CREATEDB PASSWORD %L', :'role', :'pw') \gexec
SELECT format('CREATE DATABASE %I OWNER %I', :'db', :'role')
  WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = :'db') \gexec
SELECT format('ALTER DATABASE %I OWNER TO %I', :'db', :'role') \gexec
EOSQL
    show_tail "$out"
    die "postgres: role $PG_ROLE cannot log in to database $PG_DATABASE on $where, and creating them as the postgres superuser (socket $sock) failed. Create them as a superuser ($sql), or stop that server and run scripts/brokers.sh up postgres."
  fi
  if ! postgres_login; then
    show_tail "$PG_DIR/login.err"
    die "postgres: role $PG_ROLE and database $PG_DATABASE exist on $where, but the role still cannot log in over TCP with its password (pg_hba.conf?)"
  fi
}

postgres_start() {
  log "postgres: starting PostgreSQL $(postgres_version) on $HOST:$POSTGRES_PORT (data $PG_DATA, log $PG_LOG)"
  # pg_ctl starts the postmaster in its own session, stdin from /dev/null, output to the log
  # (-l); it must not inherit our lock. -W: don't wait here, postgres_up does.
  if ! (
    close_lock_fds
    as_postgres_logged "$PG_BIN/pg_ctl" start -D "$PG_DATA" -l "$PG_LOG" -W
  ); then
    show_tail "$PG_LOG"
    die "postgres: pg_ctl start failed"
  fi
}

# wait_for's test while our postmaster starts: ready, or dies if the postmaster has gone.
PG_STARTED_AT=0
PG_OURS=0
postgres_started() {
  postgres_answers && return 0
  # pg_ctl -W returns before the postmaster has written its pid file: allow it a few seconds.
  if ((PG_OURS && SECONDS - PG_STARTED_AT > 5)) && ! postgres_pid >/dev/null; then
    show_tail "$PG_LOG"
    die "postgres exited during startup (log: $PG_LOG)"
  fi
  return 1
}

postgres_up() {
  local rc=0 pid t0=$SECONDS
  postgres_locate_data
  postgres_answers || rc=$?
  if ((rc == 0)); then
    postgres_ensure_db
    if pid=$(postgres_pid); then
      log "postgres: already running (pid $pid, $HOST:$POSTGRES_PORT, data $PG_DATA)"
    else
      log "postgres: a PostgreSQL not started from $BROKERS_DIR already answers on $HOST:$POSTGRES_PORT; using it"
    fi
    return 0
  fi
  postgres_lock
  if ! postgres_installed; then
    apt_install postgresql
    postgres_installed || die "postgresql installed but no /usr/lib/postgresql/<version>/bin has initdb, pg_ctl, postgres, psql and pg_isready"
  fi
  rc=0
  postgres_answers || rc=$?
  PG_STARTED_AT=$SECONDS
  if ((rc == 0)); then
    log "postgres: started meanwhile"
  elif pid=$(postgres_pid); then
    local port
    port=$(postgres_pidfile_line 4)
    [[ $port == "$POSTGRES_PORT" ]] ||
      die "postgres: our cluster ($PG_DATA, pid $pid) runs on port $port, not $POSTGRES_PORT; scripts/brokers.sh down postgres first"
    PG_OURS=1
    log "postgres: pid $pid is starting; waiting"
  elif ((rc == 1)); then
    log "postgres: a PostgreSQL not started from $BROKERS_DIR is starting on $HOST:$POSTGRES_PORT; waiting"
  elif port_open "$HOST" "$POSTGRES_PORT"; then
    die "port $HOST:$POSTGRES_PORT is in use by something that is not PostgreSQL ($(ss -ltnpH "sport = :$POSTGRES_PORT" 2>/dev/null | head -n 1))"
  else
    mkdir -p "$PG_DIR"
    postgres_prepare_data
    postgres_select_bin
    postgres_initdb
    write_postgres_config
    postgres_start
    PG_STARTED_AT=$SECONDS
    PG_OURS=1
  fi
  if ! wait_for "$START_TIMEOUT" postgres postgres_started; then
    show_tail "$PG_LOG"
    die "postgres did not become ready on $HOST:$POSTGRES_PORT within ${START_TIMEOUT}s"
  fi
  postgres_ensure_db
  pid=$(postgres_pid) || pid='not ours'
  log "postgres: ready (postgres://$PG_ROLE:$PG_PASSWORD@$HOST:$POSTGRES_PORT/$PG_DATABASE, pid $pid, PostgreSQL $(postgres_version), data $PG_DATA; $((SECONDS - t0))s)"
}

postgres_down() {
  local pid
  postgres_locate_data
  postgres_lock
  if ! pid=$(postgres_pid); then
    if postgres_answers; then
      log "postgres: the server on $HOST:$POSTGRES_PORT was not started from $BROKERS_DIR; leaving it alone"
    else
      log "postgres: not running"
    fi
    return 0
  fi
  postgres_select_bin
  log "postgres: stopping pid $pid"
  if ! as_postgres_logged "$PG_BIN/pg_ctl" stop -D "$PG_DATA" -m fast -w -t "$STOP_TIMEOUT"; then
    log "postgres: still running after ${STOP_TIMEOUT}s; stopping with -m immediate"
    if ! as_postgres_logged "$PG_BIN/pg_ctl" stop -D "$PG_DATA" -m immediate -w -t "$STOP_TIMEOUT"; then
      show_tail "$PG_LOG"
      die "postgres: could not stop pid $pid"
    fi
  fi
  log "postgres: stopped"
}

postgres_status() {
  local rc=0 pid
  postgres_locate_data
  postgres_answers || rc=$?
  if pid=$(postgres_pid); then
    if ((rc == 0)); then
      echo "postgres: running (pid $pid, $HOST:$POSTGRES_PORT, PostgreSQL $(postgres_version), data $PG_DATA)"
    else
      echo "postgres: starting (pid $pid, not ready on $HOST:$POSTGRES_PORT yet)"
      return 1
    fi
  elif ((rc == 0)); then
    echo "postgres: running on $HOST:$POSTGRES_PORT (not started from $BROKERS_DIR)"
  elif ! postgres_installed; then
    echo "postgres: not installed (scripts/brokers.sh up postgres installs it)"
    return 1
  else
    echo "postgres: not running"
    return 1
  fi
}

# ---------------------------------------------------------------------------------------------

usage() {
  sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}" >&2
  exit 2
}

targets() { # which -> list of brokers
  case ${1:-} in
    rabbitmq) echo rabbitmq ;;
    rabbitmq-spare) echo rabbitmq_spare ;;
    kafka) echo kafka ;;
    postgres) echo postgres ;;
    all) echo rabbitmq kafka postgres ;;
    *) usage ;;
  esac
}

spare() { rabbitmq_select rabbitmq-spare "$SPARE_NODE" "$SPARE_PORT" "$SPARE_MANAGEMENT_PORT"; }
rabbitmq_spare_up() { spare && rabbitmq_up; }
rabbitmq_spare_down() { spare && rabbitmq_down; }
rabbitmq_spare_status() { spare && rabbitmq_status; }

main() {
  local cmd=${1:-} t w rc=0
  [[ $# -gt 0 ]] && shift
  case $cmd in
    up)
      [[ $# -ge 1 ]] || usage
      for w in "$@"; do for t in $(targets "$w"); do "${t}_up"; done; done
      ;;
    down)
      [[ $# -ge 1 ]] || usage
      for w in "$@"; do for t in $(targets "$w"); do "${t}_down"; done; done
      ;;
    restart)
      [[ $# -ge 1 ]] || usage
      for w in "$@"; do for t in $(targets "$w"); do "${t}_down" && "${t}_up"; done; done
      ;;
    status)
      [[ $# -le 1 ]] || usage
      for t in $(targets "${1:-all}"); do "${t}_status" || rc=1; done
      return "$rc"
      ;;
    resolve-kafka)
      resolve_kafka
      echo "$KAFKA_LIBS"
      ;;
    kafka-class)
      [[ $# -ge 1 ]] || usage
      resolve_kafka
      ensure_java
      kafka_tool_cmd "$1"
      shift
      close_lock_fds
      exec "${KAFKA_TOOL_CMD[@]}" "$@"
      ;;
    -h | --help | help) usage ;;
    *) usage ;;
  esac
}

main "$@"
