#!/usr/bin/env bash
# A real CQL node for Courier's tests: Apache Cassandra 5.0 from Maven Central,
# run in the foreground-style on 127.0.0.1 with a minimal configuration
# (scripts/cassandra/cassandra.yaml), its data in a temp directory.
#
#   scripts/cassandra.sh check          check for the tools this script needs
#                                       (installs them with apt-get as root)
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
#   JAVA_HOME_17, JAVA_HOME    where to look first for Java. Cassandra 5.0 runs
#                              on Java 17 and 11 only, so a JAVA_HOME of another
#                              version is passed over (with a note) for the
#                              first 17 (then 11) among: the `java`
#                              alternatives, `java` on PATH, /usr/lib/jvm/*.
#
# Needs: java 17 (or 11), mvn (only until the jars are cached), go (builds
# the readiness probe), setsid. As root with apt-get, missing ones are
# installed; otherwise `check` says what is missing and how to install it.
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
START_TIMEOUT="${COURIER_CASSANDRA_START_TIMEOUT:-180}"
JAVA="" # the java binary to run Cassandra with (find_java)

# shellcheck source=lib/process.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/process.sh"
log() { echo "cassandra.sh: $*" >&2; }
die() {
	log "ERROR: $*"
	exit 1
}

# java_major prints the major version of the java binary $1 ("17"), or
# nothing when it does not run.
java_major() {
	"$1" -version 2>&1 | sed -n -E 's/.*version "(1\.)?([0-9]+).*/\2/p' | head -n1
}

# find_java sets JAVA to a Java 17 (preferred) or 11, looking in this
# order: JAVA_HOME_17, JAVA_HOME, the `java` alternatives, `java` on PATH,
# every JVM in /usr/lib/jvm (any architecture, any vendor). It fails when
# none fits.
find_java() {
	[[ -n "$JAVA" ]] && return 0
	local c v major cands=() eleven="" seen=" "
	[[ -n "${JAVA_HOME_17:-}" ]] && cands+=("$JAVA_HOME_17/bin/java")
	[[ -n "${JAVA_HOME:-}" ]] && cands+=("$JAVA_HOME/bin/java")
	if command -v update-alternatives >/dev/null; then
		while IFS= read -r c; do cands+=("$c"); done < <(update-alternatives --list java 2>/dev/null || true)
	fi
	c="$(command -v java || true)"
	[[ -n "$c" ]] && cands+=("$c")
	for c in /usr/lib/jvm/*/bin/java; do
		[[ -e "$c" ]] && cands+=("$c")
	done
	for c in "${cands[@]}"; do
		[[ -x "$c" ]] || continue
		c="$(readlink -f "$c")"
		[[ "$seen" == *" $c "* ]] && continue
		seen+="$c "
		major="$(java_major "$c")"
		if [[ "$major" == 17 ]]; then
			JAVA="$c"
			break
		fi
		[[ "$major" == 11 && -z "$eleven" ]] && eleven="$c"
	done
	[[ -z "$JAVA" ]] && JAVA="$eleven"
	# An explicit choice passed over is worth a word, not a failure.
	for v in JAVA_HOME_17 JAVA_HOME; do
		c="${!v:-}"
		[[ -n "$c" && "$JAVA" != "$(readlink -f "$c/bin/java" 2>/dev/null)" ]] || continue
		if [[ -x "$c/bin/java" ]]; then
			major="$(java_major "$c/bin/java")"
			[[ "$major" == 17 || "$major" == 11 ]] && continue
			log "note: $v=$c is Java ${major:-of an unknown version}, not 17 or 11 as Cassandra 5.0 needs${JAVA:+; using $JAVA}"
		else
			log "note: $v=$c has no bin/java${JAVA:+; using $JAVA}"
		fi
	done
	[[ -n "$JAVA" ]]
}

# apt_install installs Debian packages when this runs as root with apt-get
# (a fresh machine or CI image); it fails otherwise.
apt_install() {
	[[ $(id -u) == 0 ]] && command -v apt-get >/dev/null || return 1
	log "installing $* with apt-get"
	apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

# need_tools checks the tools named (java, mvn, setsid, go) before anything
# is done, installs missing ones with apt-get as root, and otherwise names
# every one still missing with its remedy. mvn is needed only until the jars
# are cached. (openjdk-17-jre-headless is in Debian 12 and Ubuntu 22.04 and
# 24.04; newer Debian has no Java 17 package: install a JDK 17, e.g.
# Temurin 17, and set JAVA_HOME.)
need_tools() {
	local t pkgs=() missing=()
	for t in "$@"; do
		case "$t" in
		java) find_java || pkgs+=(openjdk-17-jre-headless) ;;
		mvn) [[ -f "$CACHE/.complete" ]] || command -v mvn >/dev/null || pkgs+=(maven) ;;
		setsid) command -v setsid >/dev/null || pkgs+=(util-linux) ;;
		esac
	done
	if ((${#pkgs[@]})); then
		apt_install "${pkgs[@]}" || true
	fi
	for t in "$@"; do
		case "$t" in
		java) find_java || missing+=("Java 17 (or 11) to run Cassandra 5.0: apt-get install openjdk-17-jre-headless, or install a JDK 17 (e.g. Temurin 17) and set JAVA_HOME to it") ;;
		mvn) [[ -f "$CACHE/.complete" ]] || command -v mvn >/dev/null || missing+=("mvn, to fetch the Cassandra jars once into $CACHE: apt-get install maven") ;;
		setsid) command -v setsid >/dev/null || missing+=("setsid: apt-get install util-linux") ;;
		go) command -v go >/dev/null || missing+=("go, to build the CQL readiness probe: Go 1.26+ from https://go.dev/dl/") ;;
		esac
	done
	if ((${#missing[@]})); then
		for t in "${missing[@]}"; do log "missing: $t"; done
		die "cannot run Cassandra: ${#missing[@]} tool(s) missing (see above)"
	fi
}

# install copies cassandra-all and its runtime dependencies from Maven Central
# into the cache, once per machine and version.
install() {
	need_tools java mvn
	[[ -f "$CACHE/.complete" ]] && return 0
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
	# Maven runs on the Java found above, whatever JAVA_HOME says.
	if ! (cd "$work" && JAVA_HOME="$(dirname "$(dirname "$JAVA")")" mvn -B -q dependency:copy-dependencies -DincludeScope=runtime \
		-DoutputDirectory="$CACHE/lib.partial") >"$work/mvn.log" 2>&1; then
		cat "$work/mvn.log" >&2
		rm -rf "$work"
		die "could not fetch cassandra-all $VERSION from Maven Central"
	fi
	rm -rf "$work" "${CACHE:?}/lib"
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
	need_tools java mvn setsid go
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
	log "starting Cassandra $VERSION on 127.0.0.1:$PORT with $JAVA (data in $RUN)"
	local t0=$SECONDS
	# setsid: the node must not get the terminal's Ctrl-C before the trap
	# that stops it runs, and must not hold the test command's stdout open.
	setsid "$JAVA" "${jvm[@]}" >>"$RUN/logs/stdout.log" 2>&1 </dev/null &
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
	terminate "$(cat "$RUN/cassandra.pid")" 60
	rm -f "$RUN/cassandra.pid"
}

stop() {
	halt
	# Only remove what this script created.
	rm -rf "$RUN/data" "$RUN/logs" "$RUN/cqlready" "$RUN/cassandra.yaml"
	rmdir "$RUN" 2>/dev/null || true
}

case "${1:-}" in
check)
	need_tools java mvn setsid go
	log "ok: $JAVA (Java $(java_major "$JAVA"))$([[ -f "$CACHE/.complete" ]] && echo ", jars cached in $CACHE" || echo ", mvn $(command -v mvn)")"
	;;
install) install ;;
start) start ;;
stop) stop ;;
halt) halt ;;
status) pid_alive ;;
*)
	sed -n '2,/^set -euo/p' "$0" | sed '$d' >&2
	exit 2
	;;
esac
