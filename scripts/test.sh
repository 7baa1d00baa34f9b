#!/usr/bin/env bash
# The one test command (README: `make test`; CI: .ci/run). It installs what
# the tests need and runs every test, race detector on.
set -euo pipefail
cd "$(dirname "$0")/.."

command -v go >/dev/null || { echo "test.sh: Go is required (go1.26+)" >&2; exit 1; }

# A real CQL node for the scylla store (persistence/scylla and the store
# matrix of the end-to-end tests): Apache Cassandra 5.0 from Maven Central,
# started once here unless COURIER_TEST_SCYLLA_HOSTS already names a
# database (e.g. a ScyllaDB), and stopped when this script exits, whether
# the tests passed or not. A node that cannot start fails the run.
CASSANDRA_DIRS=()
stop_cassandra() {
	local d
	for d in "${CASSANDRA_DIRS[@]}"; do
		COURIER_CASSANDRA_DIR="$d" ./scripts/cassandra.sh stop || true
	done
}
trap stop_cassandra EXIT
trap 'exit 130' INT TERM
if [[ -z "${COURIER_TEST_SCYLLA_HOSTS:-}" ]]; then
	echo "== cassandra"
	COURIER_CASSANDRA_DIR="$(mktemp -d "${TMPDIR:-/tmp}/courier-cassandra.XXXXXX")"
	export COURIER_CASSANDRA_DIR
	CASSANDRA_DIRS+=("$COURIER_CASSANDRA_DIR")
	./scripts/cassandra.sh start
	export COURIER_TEST_SCYLLA_HOSTS="127.0.0.1:${COURIER_CASSANDRA_PORT:-9042}"
else
	echo "== using the CQL database at $COURIER_TEST_SCYLLA_HOSTS"
	./scripts/cassandra.sh install # the outage test below still runs a node of its own
fi
# The database-outage test (persistence/scylla) stops and restarts a second
# node of its own, kept in this directory, so the other tests never lose
# theirs.
COURIER_TEST_CASSANDRA_OUTAGE="$(mktemp -d "${TMPDIR:-/tmp}/courier-cassandra-outage.XXXXXX")"
export COURIER_TEST_CASSANDRA_OUTAGE
CASSANDRA_DIRS+=("$COURIER_TEST_CASSANDRA_OUTAGE")

echo "== go vet"
go vet ./...

echo "== go test -race"
go test -race -count=1 -timeout 15m ./...

# The activation-scale tests run at full size (1,000,000 grains) without the
# race detector; under -race above they run at a tenth of that.
echo "== activation scale, full size"
go test -count=1 -timeout 10m -run 'TestActivationScale' -v ./cluster/ ./actors/
