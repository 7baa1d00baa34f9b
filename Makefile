PROTOC ?= protoc
PROTOC_GEN_GO_VERSION := v1.36.8
GOBIN ?= $(shell go env GOPATH)/bin

.PHONY: proto build test test-race test-scale fmt vet

proto:
	@command -v $(PROTOC) >/dev/null || (echo "protoc missing: apt-get install -y protobuf-compiler" && exit 1)
	go install google.golang.org/protobuf/cmd/protoc-gen-go@$(PROTOC_GEN_GO_VERSION)
	$(PROTOC) -I protos --plugin=protoc-gen-go=$(GOBIN)/protoc-gen-go \
		--go_out=. --go_opt=module=github.com/courier-im/courier \
		protos/wire.proto protos/grain.proto protos/envelope.proto

build:
	go build ./...

test:
	./scripts/test.sh
