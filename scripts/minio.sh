#!/usr/bin/env bash
# A real S3-compatible server for Courier's media tests: MinIO, built once
# from the Go module proxy (`go install github.com/minio/minio@VERSION`; it
# is not packaged for this machine) and cached outside the repo, run on
# loopback with its data in a run directory. Tests talk S3 to it with
# path-style addressing and create (and delete) a bucket of their own each.
#
#   scripts/minio.sh check     check for the tools this script needs
#                              (installs curl with apt-get as root)
#   scripts/minio.sh install   build the binary (cached per machine; ~2 min); prints its path
#   scripts/minio.sh start     start a server, wait until it is ready
#   scripts/minio.sh stop      stop it (SIGTERM), wait for it to exit, delete its run directory
#   scripts/minio.sh status    exit 0 when the server is running
#   scripts/minio.sh path      print the binary's path (after install)
#
# Environment:
#   COURIER_MINIO_VERSION     github.com/minio/minio module version
#                             (default v0.0.0-20260212201848-7aac2a2c5b7c)
#   COURIER_MINIO_CACHE       binary cache (default ~/.cache/courier/minio-VERSION)
#   COURIER_MINIO_DIR         run directory (data, log, pid); default
#                             ${TMPDIR:-/tmp}/courier-minio-$UID
#   COURIER_MINIO_PORT        S3 port on 127.0.0.1 (default 18500); the
#                             console (unused) listens on the next port
#   COURIER_MINIO_ACCESS_KEY  root user (default courier)
#   COURIER_MINIO_SECRET_KEY  root password (default courier-secret)
#
# Needs: go (only until the binary is cached) and curl (start).
set -euo pipefail

VERSION="${COURIER_MINIO_VERSION:-v0.0.0-20260212201848-7aac2a2c5b7c}"
CACHE="${COURIER_MINIO_CACHE:-$HOME/.cache/courier/minio-$VERSION}"
BIN="$CACHE/minio"
RUN="${COURIER_MINIO_DIR:-${TMPDIR:-/tmp}/courier-minio-$(id -u)}"
PORT="${COURIER_MINIO_PORT:-18500}"
CONSOLE_PORT=$((PORT + 1))
ACCESS_KEY="${COURIER_MINIO_ACCESS_KEY:-courier}"
SECRET_KEY="${COURIER_MINIO_SECRET_KEY:-courier-secret}"

# shellcheck source=lib/process.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/process.sh"
log() { echo "minio.sh: $*" >&2; }
die() {
	log "ERROR: $*"
	exit 1
}

cached() { [[ -x "$BIN" ]] && "$BIN" --version >/dev/null 2>&1; }

# need_tools checks the tools named (go, curl) before anything is done:
# go only while the binary is not cached. A missing curl is installed with
# apt-get as root; anything still missing is named with its remedy.
need_tools() {
	local t missing=()
	for t in "$@"; do
		case "$t" in
		go) cached || command -v go >/dev/null || missing+=("go, to build minio $VERSION once into $CACHE: Go 1.26+ from https://go.dev/dl/") ;;
		curl)
			if ! command -v curl >/dev/null && [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
				log "installing curl with apt-get"
				if apt-get update -qq >/dev/null; then
					DEBIAN_FRONTEND=noninteractive apt-get install -y -qq curl >/dev/null || true
				fi
			fi
			command -v curl >/dev/null || missing+=("curl, to wait until the server is ready: apt-get install curl")
			;;
		esac
	done
	if ((${#missing[@]})); then
		for t in "${missing[@]}"; do log "missing: $t"; done
		die "cannot run minio: ${#missing[@]} tool(s) missing (see above)"
	fi
}

install() {
	if cached; then
		echo "$BIN"
		return 0
	fi
	need_tools go
	log "building minio $VERSION into $CACHE (once per machine; about 2 minutes)"
	local work
	work="$(mktemp -d)"
	# Built outside any module (pkg@version), into a scratch GOBIN, then
	# moved into the cache in one rename so a broken build leaves no binary.
	if ! (cd "$work" && GOFLAGS=-mod=mod GOTOOLCHAIN=local GOBIN="$work/bin" \
		go install -trimpath "github.com/minio/minio@$VERSION") >"$work/build.log" 2>&1; then
		tail -20 "$work/build.log" >&2
		rm -rf "$work"
		die "building minio failed (log above)"
	fi
	mkdir -p "$CACHE"
	mv "$work/bin/minio" "$BIN.tmp" && mv "$BIN.tmp" "$BIN"
	rm -rf "$work"
	cached || die "the built minio does not run"
	echo "$BIN"
}

pid_alive() {
	[[ -f "$RUN/pid" ]] && kill -0 "$(cat "$RUN/pid")" 2>/dev/null
}

port_in_use() {
	(exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

ready() { curl -fsS -o /dev/null --max-time 2 "http://127.0.0.1:$PORT/minio/health/ready" 2>/dev/null; }

start() {
	need_tools go curl
	install >/dev/null
	if pid_alive; then
		die "a server already runs from $RUN (pid $(cat "$RUN/pid"))"
	fi
	local p
	for p in "$PORT" "$CONSOLE_PORT"; do
		port_in_use "$p" && die "127.0.0.1:$p is taken: another MinIO? stop it, set COURIER_MINIO_PORT, or point COURIER_TEST_S3_ENDPOINT at it"
	done
	mkdir -p "$RUN/data"
	# Everything on loopback; no web console, no update checks, no
	# credentials or endpoints in the log (--anonymous).
	MINIO_ROOT_USER="$ACCESS_KEY" MINIO_ROOT_PASSWORD="$SECRET_KEY" MINIO_BROWSER=off MINIO_UPDATE=off \
		"$BIN" server "$RUN/data" --address "127.0.0.1:$PORT" --console-address "127.0.0.1:$CONSOLE_PORT" \
		--quiet --anonymous >"$RUN/minio.log" 2>&1 </dev/null &
	echo $! >"$RUN/pid"
	local t0=$SECONDS deadline=$((SECONDS + 60))
	until ready; do
		if ! pid_alive; then
			tail -20 "$RUN/minio.log" >&2
			die "the server exited"
		fi
		((SECONDS < deadline)) || {
			tail -20 "$RUN/minio.log" >&2
			stop
			die "not ready after 60 s"
		}
		sleep 0.1
	done
	pid_alive || die "the server exited, yet 127.0.0.1:$PORT answered: something else uses the port"
	log "server up on http://127.0.0.1:$PORT in $((SECONDS - t0))s (pid $(cat "$RUN/pid"), data in $RUN/data)"
}

# stop sends SIGTERM (MinIO finishes its requests and exits in ~1.5 s) and
# waits for the process to be gone, killing it after 30 s.
stop() {
	if pid_alive; then
		terminate "$(cat "$RUN/pid")" 30
	fi
	# Only what this script created.
	rm -rf "$RUN/data" "$RUN/minio.log" "$RUN/pid"
	rmdir "$RUN" 2>/dev/null || true
}

case "${1:-}" in
check)
	need_tools go curl
	log "ok: $(cached && echo "minio cached at $BIN" || echo "go $(command -v go) builds minio once"), curl $(command -v curl)"
	;;
install) install ;;
path) echo "$BIN" ;;
start) start ;;
stop) stop ;;
status)
	if pid_alive; then
		log "running (pid $(cat "$RUN/pid")) on http://127.0.0.1:$PORT"
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
