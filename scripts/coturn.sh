#!/usr/bin/env bash
# A real coturn for Courier's TURN tests: Debian's coturn package, run on
# loopback in use-auth-secret mode (the TURN REST credentials Courier
# issues with --turn-urls and --turn-secret), UDP only, no TLS, no CLI, its
# database, log and pid in a run directory. Nothing is downloaded but the
# package; nothing is cached.
#
#   scripts/coturn.sh check    check for turnserver (installs coturn with
#                              apt-get as root when missing)
#   scripts/coturn.sh start    start a server, wait until it is ready
#   scripts/coturn.sh stop     stop it (SIGTERM), wait for it to exit, delete its run directory
#   scripts/coturn.sh status   exit 0 when the server is running
#
# Environment:
#   COURIER_COTURN_DIR     run directory (config, database, log, pid); default
#                          ${TMPDIR:-/tmp}/courier-coturn-$UID
#   COURIER_COTURN_PORT    UDP port on 127.0.0.1 (default 13478)
#   COURIER_COTURN_SECRET  static-auth-secret (default courier-coturn-secret)
#
# Tests find the server through COURIER_TEST_COTURN_ADDR (127.0.0.1:PORT)
# and COURIER_TEST_COTURN_SECRET, which scripts/test.sh exports.
set -euo pipefail

RUN="${COURIER_COTURN_DIR:-${TMPDIR:-/tmp}/courier-coturn-$(id -u)}"
PORT="${COURIER_COTURN_PORT:-13478}"
SECRET="${COURIER_COTURN_SECRET:-courier-coturn-secret}"

# shellcheck source=lib/process.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/process.sh"
log() { echo "coturn.sh: $*" >&2; }
die() {
	log "ERROR: $*"
	exit 1
}

# need_tools installs coturn with apt-get as root when turnserver is
# missing (the package's service is not started: policy-rc.d or no
# systemd in containers; this script runs its own server).
need_tools() {
	if ! command -v turnserver >/dev/null && [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
		log "installing coturn with apt-get"
		if apt-get update -qq >/dev/null; then
			DEBIAN_FRONTEND=noninteractive apt-get install -y -qq coturn >/dev/null || true
		fi
	fi
	command -v turnserver >/dev/null || die "missing: turnserver, to test TURN credentials against coturn: apt-get install coturn"
}

pid_alive() {
	[[ -f "$RUN/pid" ]] && kill -0 "$(cat "$RUN/pid")" 2>/dev/null
}

udp_port_in_use() {
	command -v ss >/dev/null && ss -Hlun "sport = :$1" 2>/dev/null | grep -q .
}

# ready: coturn logs its relay and auth threads once it serves requests.
ready() { grep -q "SQLite DB connection success\|Total General servers" "$RUN/turnserver.log" 2>/dev/null; }

start() {
	need_tools
	if pid_alive; then
		die "a server already runs from $RUN (pid $(cat "$RUN/pid"))"
	fi
	udp_port_in_use "$PORT" && die "udp 127.0.0.1:$PORT is taken: another coturn? stop it, set COURIER_COTURN_PORT, or point COURIER_TEST_COTURN_ADDR at it"
	mkdir -p "$RUN"
	# Loopback only. allow-loopback-peers: the tests' two relays are both on
	# 127.0.0.1 (never do this on a public server). userdb keeps coturn's
	# SQLite database out of /var/lib/turn.
	cat >"$RUN/turnserver.conf" <<CONF
listening-ip=127.0.0.1
relay-ip=127.0.0.1
listening-port=$PORT
realm=courier
use-auth-secret
static-auth-secret=$SECRET
allow-loopback-peers
no-multicast-peers
no-tls
no-dtls
no-tcp
no-cli
userdb=$RUN/turndb
pidfile=$RUN/turnserver.pid
log-file=$RUN/turnserver.log
simple-log
no-stdout-log
CONF
	chmod 600 "$RUN/turnserver.conf"
	turnserver -c "$RUN/turnserver.conf" >"$RUN/stdout.log" 2>&1 </dev/null &
	echo $! >"$RUN/pid"
	local t0=$SECONDS deadline=$((SECONDS + 20))
	until ready; do
		if ! pid_alive; then
			tail -20 "$RUN/turnserver.log" "$RUN/stdout.log" >&2 2>/dev/null || true
			die "the server exited"
		fi
		((SECONDS < deadline)) || {
			tail -20 "$RUN/turnserver.log" >&2 2>/dev/null || true
			stop
			die "not ready after 20 s"
		}
		sleep 0.1
	done
	log "server up on udp 127.0.0.1:$PORT in $((SECONDS - t0))s (pid $(cat "$RUN/pid"), $(turnserver --version 2>/dev/null | tail -1))"
}

stop() {
	if pid_alive; then
		terminate "$(cat "$RUN/pid")" 10
	fi
	# Only what this script created.
	rm -f "$RUN/turnserver.conf" "$RUN/turndb" "$RUN/turnserver.pid" "$RUN/turnserver.log" "$RUN/stdout.log" "$RUN/pid"
	rmdir "$RUN" 2>/dev/null || true
}

case "${1:-}" in
check)
	need_tools
	log "ok: turnserver $(command -v turnserver)"
	;;
start) start ;;
stop) stop ;;
status)
	if pid_alive; then
		log "running (pid $(cat "$RUN/pid")) on udp 127.0.0.1:$PORT"
	else
		log "not running (run directory $RUN)"
		exit 1
	fi
	;;
*)
	sed -n '2,/^set -euo/p' "$0" | sed '$d' >&2
	exit 2
	;;
esac
