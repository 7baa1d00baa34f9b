#!/usr/bin/env bash
# The one test command (README: `make test`; CI: .ci/run). It installs what
# the tests need and runs every test, race detector on.
#
#   scripts/test.sh              everything: go vet, the whole suite with -race
#                                (with its CQL node, Consul agent, MinIO and coturn), then the
#                                activation-scale tests at full size (make test)
#   scripts/test.sh race [PKG…]  only the -race suite, with its services; PKG…
#                                narrows it (default ./...)  (make test-race)
#   scripts/test.sh scale        only the full-size activation-scale tests; they
#                                need no services              (make test-scale)
#
# Every tool the run needs is checked before anything starts (as root with
# apt-get, missing ones are installed).
set -euo pipefail
cd "$(dirname "$0")/.."

MODE="${1:-all}"
[[ $# -gt 0 ]] && shift
case "$MODE" in
all) [[ $# -eq 0 ]] || { echo "test.sh: packages only go with the race mode" >&2; exit 2; } ;;
race) ;;
scale) [[ $# -eq 0 ]] || { echo "test.sh: the scale mode takes no packages" >&2; exit 2; } ;;
*)
	sed -n '2,/^set -euo/p' "$0" | sed '$d' >&2
	exit 2
	;;
esac
PKGS=("${@:-./...}")

command -v go >/dev/null || { echo "test.sh: missing: go: Go 1.26+ from https://go.dev/dl/" >&2; exit 1; }

# Wall time per phase, printed when the run ends (passed or not), so a
# slower suite shows in CI's log before it gets in anyone's way. The
# `ok <package> <time>` lines of go test tell which package grew.
PHASES=""
PHASE=""
PHASE_T0=$SECONDS
RUN_T0=$SECONDS
phase() {
	[[ -n "$PHASE" ]] && PHASES+="$PHASE $((SECONDS - PHASE_T0))s, "
	PHASE="$1"
	PHASE_T0=$SECONDS
	[[ -n "$PHASE" ]] && echo "== $PHASE"
	return 0
}
report_times() {
	phase ""
	[[ -n "$PHASES" ]] && echo "== wall time: ${PHASES}total $((SECONDS - RUN_T0))s"
	return 0
}

# The activation-scale tests run at full size (1,000,000 grains) without the
# race detector; under -race they run at a tenth of that.
scale() {
	phase "activation scale, full size"
	go test -count=1 -timeout 10m -run 'TestActivationScale' -v ./cluster/ ./actors/
}
if [[ "$MODE" == scale ]]; then
	trap report_times EXIT
	scale
	exit 0
fi

# The services' tools, checked before any starts: one run names all that
# is missing. The outage test runs a CQL node of its own even when
# COURIER_TEST_SCYLLA_HOSTS names a database, and the Consul-restart test
# an agent of its own, so both are always needed; MinIO only when
# COURIER_TEST_S3_ENDPOINT names no S3 server, coturn only when
# COURIER_TEST_COTURN_ADDR names no TURN server.
tools_ok=1
./scripts/cassandra.sh check || tools_ok=0
./scripts/consul.sh check || tools_ok=0
if [[ -z "${COURIER_TEST_S3_ENDPOINT:-}" ]]; then
	./scripts/minio.sh check || tools_ok=0
fi
if [[ -z "${COURIER_TEST_COTURN_ADDR:-}" ]]; then
	./scripts/coturn.sh check || tools_ok=0
fi
((tools_ok)) || { echo "test.sh: install what is missing above and run again" >&2; exit 1; }

# A real CQL node for the scylla store (persistence/scylla and the store
# matrix of the end-to-end tests): Apache Cassandra 5.0 from Maven Central,
# started once here unless COURIER_TEST_SCYLLA_HOSTS already names a
# database (e.g. a ScyllaDB), and stopped when this script exits, whether
# the tests passed or not. A node that cannot start fails the run.
CASSANDRA_DIRS=()
CONSUL_DIR=""
MINIO_DIR=""
COTURN_DIR=""
BIN_DIR=""
stop_services() {
	local d
	report_times
	[[ -n "$BIN_DIR" ]] && rm -rf "$BIN_DIR"
	for d in "${CASSANDRA_DIRS[@]}"; do
		COURIER_CASSANDRA_DIR="$d" ./scripts/cassandra.sh stop || true
	done
	if [[ -n "$CONSUL_DIR" ]]; then
		COURIER_CONSUL_DIR="$CONSUL_DIR" ./scripts/consul.sh stop || true
	fi
	if [[ -n "$MINIO_DIR" ]]; then
		COURIER_MINIO_DIR="$MINIO_DIR" ./scripts/minio.sh stop || true
	fi
	if [[ -n "$COTURN_DIR" ]]; then
		COURIER_COTURN_DIR="$COTURN_DIR" ./scripts/coturn.sh stop || true
	fi
}
trap stop_services EXIT
trap 'exit 130' INT TERM
if [[ -z "${COURIER_TEST_SCYLLA_HOSTS:-}" ]]; then
	phase "cassandra"
	COURIER_CASSANDRA_DIR="$(mktemp -d "${TMPDIR:-/tmp}/courier-cassandra.XXXXXX")"
	export COURIER_CASSANDRA_DIR
	CASSANDRA_DIRS+=("$COURIER_CASSANDRA_DIR")
	./scripts/cassandra.sh start
	export COURIER_TEST_SCYLLA_HOSTS="127.0.0.1:${COURIER_CASSANDRA_PORT:-9042}"
else
	echo "== using the CQL database at $COURIER_TEST_SCYLLA_HOSTS"
	./scripts/cassandra.sh install # the outage test below still runs a node of its own
fi
# A real Consul agent for the cluster tests (cluster/consul, e2e): built
# once from the Go module proxy and cached, run in -dev mode on 127.0.0.1
# unless COURIER_TEST_CONSUL_ADDR already names one. The Consul-restart test
# runs a second agent of its own on 127.0.0.2 from the same binary.
COURIER_TEST_CONSUL_BIN="$(./scripts/consul.sh install)"
export COURIER_TEST_CONSUL_BIN
if [[ -z "${COURIER_TEST_CONSUL_ADDR:-}" ]]; then
	phase "consul"
	CONSUL_DIR="$(mktemp -d "${TMPDIR:-/tmp}/courier-consul.XXXXXX")"
	COURIER_CONSUL_DIR="$CONSUL_DIR" ./scripts/consul.sh start
	export COURIER_TEST_CONSUL_ADDR="127.0.0.1:8500"
fi

# A real S3-compatible server for the media blob store (media's S3
# backend): MinIO, built once from the Go module proxy and cached, run on
# 127.0.0.1:18500 unless COURIER_TEST_S3_ENDPOINT already names one (then
# COURIER_TEST_S3_ACCESS_KEY and COURIER_TEST_S3_SECRET_KEY are its
# credentials). Each test creates a bucket of its own and deletes it.
if [[ -z "${COURIER_TEST_S3_ENDPOINT:-}" ]]; then
	phase "minio"
	./scripts/minio.sh install >/dev/null
	MINIO_DIR="$(mktemp -d "${TMPDIR:-/tmp}/courier-minio.XXXXXX")"
	COURIER_MINIO_DIR="$MINIO_DIR" ./scripts/minio.sh start
	export COURIER_TEST_S3_ENDPOINT="http://127.0.0.1:${COURIER_MINIO_PORT:-18500}"
	export COURIER_TEST_S3_ACCESS_KEY="${COURIER_MINIO_ACCESS_KEY:-courier}"
	export COURIER_TEST_S3_SECRET_KEY="${COURIER_MINIO_SECRET_KEY:-courier-secret}"
else
	echo "== using the S3 server at $COURIER_TEST_S3_ENDPOINT"
fi

# A real coturn for the TURN credentials (turn): Debian's package, run on
# udp 127.0.0.1:13478 in use-auth-secret mode unless
# COURIER_TEST_COTURN_ADDR already names one (then
# COURIER_TEST_COTURN_SECRET is its static-auth-secret).
if [[ -z "${COURIER_TEST_COTURN_ADDR:-}" ]]; then
	phase "coturn"
	COTURN_DIR="$(mktemp -d "${TMPDIR:-/tmp}/courier-coturn.XXXXXX")"
	COURIER_COTURN_DIR="$COTURN_DIR" ./scripts/coturn.sh start
	export COURIER_TEST_COTURN_ADDR="127.0.0.1:${COURIER_COTURN_PORT:-13478}"
	export COURIER_TEST_COTURN_SECRET="${COURIER_COTURN_SECRET:-courier-coturn-secret}"
else
	echo "== using the TURN server at $COURIER_TEST_COTURN_ADDR"
fi

# The database-outage test (persistence/scylla) stops and restarts a second
# node of its own, kept in this directory, so the other tests never lose
# theirs.
COURIER_TEST_CASSANDRA_OUTAGE="$(mktemp -d "${TMPDIR:-/tmp}/courier-cassandra-outage.XXXXXX")"
export COURIER_TEST_CASSANDRA_OUTAGE
CASSANDRA_DIRS+=("$COURIER_TEST_CASSANDRA_OUTAGE")

# The cluster tests (e2e) run the real courier binary as separate
# processes, built once here without the race detector.
BIN_DIR="$(mktemp -d "${TMPDIR:-/tmp}/courier-bin.XXXXXX")"
COURIER_TEST_COURIER_BIN="$BIN_DIR/courier"
export COURIER_TEST_COURIER_BIN
phase "build courier"
go build -o "$COURIER_TEST_COURIER_BIN" ./cmd/courier

if [[ "$MODE" == all ]]; then
	phase "go vet"
	go vet ./...
fi

phase "go test -race"
# Three packages at a time on two cores: the slowest ones (e2e, the store
# and node suites against the CQL node) spend much of their time waiting
# on Cassandra round trips and child processes, which a third package
# overlaps.
go test -race -count=1 -p 3 -timeout 15m "${PKGS[@]}"

if [[ "$MODE" == all ]]; then
	scale
fi
