#!/usr/bin/env bash
# A real CQL node for Courier's tests: Apache Cassandra 5.0 from Maven Central,
# run in the foreground-style on 127.0.0.1 with a minimal configuration
# (scripts/cassandra/cassandra.yaml), its data in a temp directory.
#
#   scripts/cassandra.sh install        fetch the jars (cached per machine)
#   scripts/cassandra.sh start          start a node, wait until it answers a query
#   scripts/cassandra.sh stop           stop it (SIGTERM: Cassandra drains), delete its data
#   scripts/cassandra.sh halt           stop it but keep its data (for a later start)
#   scripts/cassandra.sh status         exit 0 when the node is running
#
# Environment:
#   COURIER_CASSANDRA_DIR      run directory (data, logs, pid); default
#                              ${TMPDIR:-/tmp}/courier-cassandra-$UID. `start`
#                              reuses the data found there (a restart).
#   COURIER_CASSANDRA_VERSION  cassandra-all version (default 5.0.8)
#   COURIER_CASSANDRA_CACHE    jar cache (default ~/.cache/courier/cassandra-VERSION)
#   COURIER_CASSANDRA_PORT     native transport port (default 9042); storage
#                              port is 7000, JMX (local only) 7199
#   COURIER_CASSANDRA_HEAP     JVM heap (default 1G)
#   JAVA_HOME                  a JDK 17 (default /usr/lib/jvm/java-17-openjdk-amd64);
#                              Cassandra 5.0 runs on Java 11 and 17 only.
#
# Any failure exits non-zero with the reason and the node's log tail: tests
# must never silently run without their database.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
CONF="$ROOT/scripts/cassandra"
VERSION="${COURIER_CASSANDRA_VERSION:-5.0.8}"
CACHE="${COURIER_CASSANDRA_CACHE:-$HOME/.cache/courier/cassandra-$VERSION}"
RUN="${COURIER_CASSANDRA_DIR:-${TMPDIR:-/tmp}/courier-cassandra-$(id -u)}"
PORT="${COURIER_CASSANDRA_PORT:-9042}"
STORAGE_PORT="${COURIER_CASSANDRA_STORAGE_PORT:-7000}"
JMX_PORT="${COURIER_CASSANDRA_JMX_PORT:-7199}"
HEAP="${COURIER_CASSANDRA_HEAP:-1G}"
JAVA_HOME="${JAVA_HOME_17:-/usr/lib/jvm/java-17-openjdk-amd64}"
START_TIMEOUT="${COURIER_CASSANDRA_START_TIMEOUT:-180}"

log() { echo "cassandra.sh: $*" >&2; }
die() {
	log "ERROR: $*"
	exit 1
}

need_tools() {
	if [[ ! -x "$JAVA_HOME/bin/java" ]] || ! command -v mvn >/dev/null; then
		# Both come with this machine's image; install them on one that lacks
		# them rather than skipping the database tests.
		if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
			log "installing OpenJDK 17 and Maven with apt-get"
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openjdk-17-jre-headless maven >/dev/null
		fi
	fi
	[[ -x "$JAVA_HOME/bin/java" ]] || die "no JDK 17 at $JAVA_HOME (apt-get install openjdk-17-jre-headless, or set JAVA_HOME_17)"
	"$JAVA_HOME/bin/java" -version 2>&1 | grep -q '"17\.' || die "$JAVA_HOME is not Java 17: Cassandra 5.0 needs Java 11 or 17"
}

# install copies cassandra-all and its runtime dependencies from Maven Central
# into the cache, once per machine and version.
install() {
	need_tools
	[[ -f "$CACHE/.complete" ]] && return 0
	command -v mvn >/dev/null || die "mvn is required to fetch Cassandra (apt-get install maven)"
	log "fetching org.apache.cassandra:cassandra-all:$VERSION into $CACHE"
	local work
	work="$(mktemp -d)"
	# A throwaway project whose only purpose is to resolve the dependency tree.
	cat >"$work/pom.xml" <<EOF
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>im.courier.test</groupId>
  <artifactId>cassandra-runtime</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.cassandra</groupId>
      <artifactId>cassandra-all</artifactId>
      <version>$VERSION</version>
    </dependency>
  </dependencies>
</project>
EOF
	mkdir -p "$CACHE"
	rm -rf "$CACHE/lib.partial"
	if ! (cd "$work" && mvn -B -q dependency:copy-dependencies -DincludeScope=runtime \
		-DoutputDirectory="$CACHE/lib.partial") >"$work/mvn.log" 2>&1; then
		cat "$work/mvn.log" >&2
		rm -rf "$work"
		die "could not fetch cassandra-all $VERSION from Maven Central"
	fi
	rm -rf "$work" "$CACHE/lib"
	mv "$CACHE/lib.partial" "$CACHE/lib"
	ls "$CACHE/lib"/cassandra-all-*.jar >/dev/null 2>&1 || die "cassandra-all jar missing after download"
	touch "$CACHE/.complete"
}

pid_alive() {
	[[ -f "$RUN/cassandra.pid" ]] && kill -0 "$(cat "$RUN/cassandra.pid")" 2>/dev/null
}

port_in_use() {
	(exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# ready_probe builds the CQL probe once per run directory.
ready_probe() {
	if [[ ! -x "$RUN/cqlready" ]]; then
		(cd "$ROOT" && go build -o "$RUN/cqlready" ./persistence/scylla/cmd/cqlready) || die "cannot build the CQL readiness probe"
	fi
	echo "$RUN/cqlready"
}

start() {
	install
	if pid_alive; then
		log "already running (pid $(cat "$RUN/cassandra.pid")) in $RUN"
		return 0
	fi
	for p in "$PORT" "$STORAGE_PORT" "$JMX_PORT"; do
		port_in_use "$p" && die "127.0.0.1:$p is already in use: stop the other CQL node, or set COURIER_TEST_SCYLLA_HOSTS to use it"
	done
	mkdir -p "$RUN/data" "$RUN/logs"
	# The node's own configuration: it is its own seed (on its own storage
	# port) and its cluster name carries the port, so two test nodes on one
	# machine never gossip with each other and form one cluster.
	sed -e "s/127\.0\.0\.1:7000/127.0.0.1:$STORAGE_PORT/" -e "s/^cluster_name: .*/cluster_name: courier-test-$PORT/" \
		"$CONF/cassandra.yaml" >"$RUN/cassandra.yaml"
	local probe
	probe="$(ready_probe)"
	local jamm
	jamm="$(ls "$CACHE"/lib/jamm-*.jar | head -n1)"
	# JVM flags: the JDK 17 lines of Cassandra's conf/jvm17-server.options
	# (G1, module exports/opens the server needs, Netty settings) plus the
	# jamm agent Cassandra measures memtables with, and test-speed switches:
	# no gossip settle wait, no fsync of system tables, log to this run dir.
	local jvm=(
		-Xms"$HEAP" -Xmx"$HEAP" -XX:MaxDirectMemorySize=512M
		-XX:+UseG1GC -XX:+ParallelRefProcEnabled -XX:MaxTenuringThreshold=1
		-XX:G1HeapRegionSize=16m -XX:G1RSetUpdatingPauseTimePercent=5
		-XX:MaxGCPauseMillis=300 -XX:InitiatingHeapOccupancyPercent=70
		-XX:+PerfDisableSharedMem -XX:+ExitOnOutOfMemoryError
		-Djdk.attach.allowAttachSelf=true
		--add-exports java.base/jdk.internal.misc=ALL-UNNAMED
		--add-exports java.management.rmi/com.sun.jmx.remote.internal.rmi=ALL-UNNAMED
		--add-exports java.rmi/sun.rmi.registry=ALL-UNNAMED
		--add-exports java.rmi/sun.rmi.server=ALL-UNNAMED
		--add-exports java.sql/java.sql=ALL-UNNAMED
		--add-exports java.base/java.lang.ref=ALL-UNNAMED
		--add-exports jdk.unsupported/sun.misc=ALL-UNNAMED
		--add-exports jdk.compiler/com.sun.tools.javac.file=ALL-UNNAMED
		--add-exports jdk.attach/sun.tools.attach=ALL-UNNAMED
		--add-opens java.base/java.lang.module=ALL-UNNAMED
		--add-opens java.base/jdk.internal.loader=ALL-UNNAMED
		--add-opens java.base/jdk.internal.ref=ALL-UNNAMED
		--add-opens java.base/jdk.internal.reflect=ALL-UNNAMED
		--add-opens java.base/jdk.internal.math=ALL-UNNAMED
		--add-opens java.base/jdk.internal.module=ALL-UNNAMED
		--add-opens java.base/jdk.internal.util.jar=ALL-UNNAMED
		--add-opens jdk.management/com.sun.management.internal=ALL-UNNAMED
		--add-opens java.base/sun.nio.ch=ALL-UNNAMED
		--add-opens java.base/java.io=ALL-UNNAMED
		--add-opens java.base/java.lang.reflect=ALL-UNNAMED
		--add-opens jdk.compiler/com.sun.tools.javac=ALL-UNNAMED
		--add-opens java.base/java.lang=ALL-UNNAMED
		--add-opens java.base/java.util=ALL-UNNAMED
		-Dio.netty.tryReflectionSetAccessible=true
		-Dio.netty.allocator.useCacheForAllThreads=true
		-Dio.netty.allocator.maxOrder=11
		-javaagent:"$jamm"
		-Djava.net.preferIPv4Stack=true
		-Dcassandra.config="file://$RUN/cassandra.yaml"
		-Dlogback.configurationFile="$CONF/logback.xml"
		-Dcassandra.storagedir="$RUN/data"
		-Dcassandra.logdir="$RUN/logs"
		-Dcassandra.native_transport_port="$PORT"
		-Dcassandra.storage_port="$STORAGE_PORT"
		-Dcassandra.jmx.local.port="$JMX_PORT"
		-Dcassandra-foreground=yes
		-Dcassandra.skip_wait_for_gossip_to_settle=0
		-Dcassandra.unsafesystem=true
		-Dcassandra.ring_delay_ms=1000
		-cp "$CACHE/lib/*"
		org.apache.cassandra.service.CassandraDaemon
	)
	log "starting Cassandra $VERSION on 127.0.0.1:$PORT (data in $RUN)"
	local t0=$SECONDS
	# setsid: the node must not get the terminal's Ctrl-C before the trap
	# that stops it runs, and must not hold the test command's stdout open.
	setsid "$JAVA_HOME/bin/java" "${jvm[@]}" >>"$RUN/logs/stdout.log" 2>&1 </dev/null &
	echo $! >"$RUN/cassandra.pid"
	# Ready means a real query answered, not an open port. Stop waiting as
	# soon as the JVM is gone: a failed start should fail fast and loudly.
	local deadline=$((SECONDS + START_TIMEOUT))
	until "$probe" -hosts "127.0.0.1:$PORT" -timeout 5s -quiet 2>/dev/null; do
		if ! pid_alive || ((SECONDS >= deadline)); then
			log "node did not become ready (JVM $(pid_alive && echo running || echo exited)); last log lines:"
			tail -n 40 "$RUN/logs/system.log" "$RUN/logs/stdout.log" >&2 2>/dev/null || true
			halt
			die "Cassandra failed to start"
		fi
	done
	if ! pid_alive; then
		tail -n 40 "$RUN/logs/system.log" "$RUN/logs/stdout.log" >&2 2>/dev/null || true
		die "the Cassandra JVM exited, yet 127.0.0.1:$PORT answered: another node is using the port"
	fi
	log "ready in $((SECONDS - t0))s (pid $(cat "$RUN/cassandra.pid"))"
}

# halt stops the node and waits for the JVM to exit. SIGTERM runs Cassandra's
# drain hook: client connections close, memtables flush, the commit log is
# synced, so nothing acknowledged is lost.
halt() {
	pid_alive || { rm -f "$RUN/cassandra.pid"; return 0; }
	local pid
	pid="$(cat "$RUN/cassandra.pid")"
	kill -TERM "$pid" 2>/dev/null || true
	for _ in $(seq 1 600); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	if kill -0 "$pid" 2>/dev/null; then
		log "pid $pid ignored SIGTERM for 60s; killing it"
		kill -KILL "$pid" 2>/dev/null || true
		sleep 0.5
	fi
	rm -f "$RUN/cassandra.pid"
}

stop() {
	halt
	# Only remove what this script created.
	rm -rf "$RUN/data" "$RUN/logs" "$RUN/cqlready" "$RUN/cassandra.yaml"
	rmdir "$RUN" 2>/dev/null || true
}

case "${1:-}" in
install) install ;;
start) start ;;
stop) stop ;;
halt) halt ;;
status) pid_alive ;;
*)
	sed -n '2,25p' "$0" >&2
	exit 2
	;;
esac
