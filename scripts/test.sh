#!/usr/bin/env bash
# The one test command (README: `make test`; CI: .ci/run). It installs what
# the tests need and runs every test, race detector on.
set -euo pipefail
cd "$(dirname "$0")/.."

command -v go >/dev/null || { echo "test.sh: Go is required (go1.26+)" >&2; exit 1; }

echo "== go vet"
go vet ./...

echo "== go test -race"
go test -race -count=1 -timeout 15m ./...

# The activation-scale tests run at full size (1,000,000 grains) without the
# race detector; under -race above they run at a tenth of that.
echo "== activation scale, full size"
go test -count=1 -timeout 10m -run 'TestActivationScale' -v ./cluster/ ./actors/
