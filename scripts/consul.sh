#!/usr/bin/env bash
# A real Consul agent for Courier's cluster tests. Consul is not packaged for
# this machine, but it is a Go module: `install` builds its CLI once from the
# module proxy (a tiny main around github.com/hashicorp/consul/command — the
# root module's replace directives make `go install` of it fail) and caches
# the binary outside the repo.
#
#   scripts/consul.sh check     check for the tools this script needs
#                               (installs curl with apt-get as root)
#   scripts/consul.sh install   build the binary (cached per machine); prints its path
#   scripts/consul.sh start     start a dev agent, wait until it has a leader
#   scripts/consul.sh stop      stop it and delete its run directory
#   scripts/consul.sh path      print the binary's path (after install)
#
# Environment:
#   COURIER_CONSUL_VERSION  consul version (default 1.20.1)
#   COURIER_CONSUL_CACHE    binary cache (default ~/.cache/courier/consul-VERSION)
#   COURIER_CONSUL_DIR      run directory (pid, log); default ${TMPDIR:-/tmp}/courier-consul-$UID
#   COURIER_CONSUL_BIND     loopback address the agent binds and serves on (default 127.0.0.1);
#                           HTTP on port 8500 of it
#
# Needs: go (only until the binary is cached) and curl (start).
set -euo pipefail

VERSION="${COURIER_CONSUL_VERSION:-1.20.1}"
CACHE="${COURIER_CONSUL_CACHE:-$HOME/.cache/courier/consul-$VERSION}"
BIN="$CACHE/consul"
RUN="${COURIER_CONSUL_DIR:-${TMPDIR:-/tmp}/courier-consul-$(id -u)}"
BIND="${COURIER_CONSUL_BIND:-127.0.0.1}"

log() { echo "consul.sh: $*" >&2; }
die() {
	log "ERROR: $*"
	exit 1
}

cached() { [[ -x "$BIN" ]] && "$BIN" version >/dev/null 2>&1; }

# need_tools checks the tools named (go, curl) before anything is done:
# go only while the binary is not cached. A missing curl is installed with
# apt-get as root; anything still missing is named with its remedy.
need_tools() {
	local t missing=()
	for t in "$@"; do
		case "$t" in
		go) cached || command -v go >/dev/null || missing+=("go, to build consul $VERSION once into $CACHE: Go 1.26+ from https://go.dev/dl/") ;;
		curl)
			if ! command -v curl >/dev/null && [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
				log "installing curl with apt-get"
				apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq curl >/dev/null || true
			fi
			command -v curl >/dev/null || missing+=("curl, to wait for the agent's leader: apt-get install curl")
			;;
		esac
	done
	if ((${#missing[@]})); then
		for t in "${missing[@]}"; do log "missing: $t"; done
		die "cannot run consul: ${#missing[@]} tool(s) missing (see above)"
	fi
}

install() {
	if cached; then
		echo "$BIN"
		return 0
	fi
	need_tools go
	log "building consul $VERSION into $CACHE (once per machine; a few minutes)"
	local work
	work="$(mktemp -d)"
	cat >"$work/go.mod" <<EOF
module courier.local/consul

go 1.22
EOF
	cat >"$work/main.go" <<'EOF'
// The consul CLI: what github.com/hashicorp/consul's own main does.
package main

import (
	"fmt"
	"io"
	"log"
	"os"

	mcli "github.com/mitchellh/cli"

	"github.com/hashicorp/consul/command"
	"github.com/hashicorp/consul/command/cli"
	"github.com/hashicorp/consul/command/version"
)

func main() {
	log.SetOutput(io.Discard)
	ui := &cli.BasicUI{BasicUi: mcli.BasicUi{Writer: os.Stdout, ErrorWriter: os.Stderr}}
	c := &mcli.CLI{Args: os.Args[1:], Commands: command.RegisteredCommands(ui), Name: "consul",
		HelpFunc: mcli.BasicHelpFunc("consul"), HelpWriter: os.Stdout, ErrorWriter: os.Stderr}
	if c.IsVersion() {
		os.Exit(version.New(ui).Run(nil))
	}
	code, err := c.Run()
	if err != nil {
		fmt.Fprintf(os.Stderr, "consul: %v\n", err)
		os.Exit(1)
	}
	os.Exit(code)
}
EOF
	(
		cd "$work"
		export GOFLAGS=-mod=mod GOTOOLCHAIN=local
		go get "github.com/hashicorp/consul@v$VERSION" >"$work/get.log" 2>&1 || { tail -20 "$work/get.log" >&2; exit 1; }
		go build -trimpath -o consul . 2>"$work/build.log" || { tail -20 "$work/build.log" >&2; exit 1; }
	) || die "building consul failed (log above)"
	mkdir -p "$CACHE"
	mv "$work/consul" "$BIN.tmp" && mv "$BIN.tmp" "$BIN"
	rm -rf "$work"
	"$BIN" version >/dev/null || die "the built consul does not run"
	echo "$BIN"
}

start() {
	need_tools go curl
	install >/dev/null
	mkdir -p "$RUN"
	if [[ -f "$RUN/pid" ]] && kill -0 "$(cat "$RUN/pid")" 2>/dev/null; then
		die "an agent already runs from $RUN (pid $(cat "$RUN/pid"))"
	fi
	if (exec 3<>"/dev/tcp/$BIND/8500") 2>/dev/null; then
		die "$BIND:8500 is taken: another Consul agent? stop it or set COURIER_CONSUL_BIND"
	fi
	# -dev: one in-memory server, no ACLs; everything on the loopback address.
	"$BIN" agent -dev -bind "$BIND" -client "$BIND" -log-level warn >"$RUN/consul.log" 2>&1 &
	echo $! >"$RUN/pid"
	local deadline=$((SECONDS + 60))
	until curl -fsS "http://$BIND:8500/v1/status/leader" 2>/dev/null | grep -q ':'; do
		if ! kill -0 "$(cat "$RUN/pid")" 2>/dev/null; then
			tail -20 "$RUN/consul.log" >&2
			die "the agent exited"
		fi
		((SECONDS < deadline)) || {
			tail -20 "$RUN/consul.log" >&2
			die "no leader after 60 s"
		}
		sleep 0.2
	done
	log "agent up on http://$BIND:8500 (pid $(cat "$RUN/pid"))"
}

stop() {
	[[ -f "$RUN/pid" ]] || return 0
	local pid
	pid="$(cat "$RUN/pid")"
	if kill -0 "$pid" 2>/dev/null; then
		kill "$pid" 2>/dev/null || true
		for _ in $(seq 50); do
			kill -0 "$pid" 2>/dev/null || break
			sleep 0.1
		done
		kill -9 "$pid" 2>/dev/null || true
	fi
	rm -rf "$RUN"
}

case "${1:-}" in
check)
	need_tools go curl
	log "ok: $(cached && echo "consul cached at $BIN" || echo "go $(command -v go) builds consul once"), curl $(command -v curl)"
	;;
install) install ;;
path) echo "$BIN" ;;
start) start ;;
stop) stop ;;
*)
	echo "usage: $0 check|install|start|stop|path" >&2
	exit 2
	;;
esac
