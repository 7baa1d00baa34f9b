PROTOC ?= protoc
PROTOC_GEN_GO_VERSION := v1.36.8
GOBIN ?= $(shell go env GOPATH)/bin
# Go files gofmt checks: all but the generated *.pb.go and hidden directories.
GOFILES = $(shell find . -path './.*' -prune -o -name '*.go' ! -name '*.pb.go' -print)

.DEFAULT_GOAL := help
.PHONY: help proto build test test-race test-scale fmt fmt-fix vet

help: ## list the targets
	@echo "make targets:"
	@awk 'BEGIN {FS = ":.*## "} /^[a-z-]+:.*## / {printf "  %-11s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

proto: ## regenerate the protos/*.pb.go files (needs protoc)
	@command -v $(PROTOC) >/dev/null || (echo "protoc missing: apt-get install -y protobuf-compiler" && exit 1)
	go install google.golang.org/protobuf/cmd/protoc-gen-go@$(PROTOC_GEN_GO_VERSION)
	$(PROTOC) -I protos --plugin=protoc-gen-go=$(GOBIN)/protoc-gen-go \
		--go_out=. --go_opt=module=github.com/courier-im/courier \
		protos/wire.proto protos/grain.proto protos/envelope.proto

build: ## go build ./...
	go build ./...

test: ## what CI runs: vet, the -race suite with a CQL node and Consul, full-size activation scale
	./scripts/test.sh

test-race: ## only the -race suite, with its services (PKGS=./push/ narrows it)
	./scripts/test.sh race $(PKGS)

test-scale: ## only the activation-scale tests at full size (1,000,000 grains; no services)
	./scripts/test.sh scale

vet: ## go vet ./...
	go vet ./...

fmt: ## fail, listing them, when gofmt would change Go files (*.pb.go excepted)
	@out="$$(gofmt -l $(GOFILES))"; \
	if [ -n "$$out" ]; then echo "gofmt would change (make fmt-fix):"; echo "$$out"; exit 1; fi

fmt-fix: ## gofmt -w those files
	gofmt -w $(GOFILES)
