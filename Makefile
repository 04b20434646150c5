# Build, run and test the todo system. Every tool is installed at a pinned
# version into .bin/ by `go install`, so Go is the only prerequisite.

SHELL := /bin/bash
BIN := $(CURDIR)/.bin
export GOBIN := $(BIN)

BUF_VERSION := v1.75.0
PROTOC_GEN_GO_VERSION := v1.36.12
PROTOC_GEN_GO_GRPC_VERSION := v1.6.2
GRPCURL_VERSION := v1.9.4
GHZ_VERSION := v0.93.0
KUBECONFORM_VERSION := v0.8.0
KUSTOMIZE_VERSION := v5.8.1

MODULES := proto auth-service todo-service deploy
# PostgreSQL that bench and soak use when TEST_DATABASE_URL is not set.
LOCAL_POSTGRES_URL := postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable
GO_PACKAGES := ./proto/... ./auth-service/... ./todo-service/... ./deploy/...

.PHONY: all build run test fuzz proto lint validate bench soak faults images tools clean

all: build

$(BIN)/buf:
	go install github.com/bufbuild/buf/cmd/buf@$(BUF_VERSION)

$(BIN)/protoc-gen-go:
	go install google.golang.org/protobuf/cmd/protoc-gen-go@$(PROTOC_GEN_GO_VERSION)

$(BIN)/protoc-gen-go-grpc:
	go install google.golang.org/grpc/cmd/protoc-gen-go-grpc@$(PROTOC_GEN_GO_GRPC_VERSION)

$(BIN)/grpcurl:
	go install github.com/fullstorydev/grpcurl/cmd/grpcurl@$(GRPCURL_VERSION)

$(BIN)/ghz:
	go install github.com/bojand/ghz/cmd/ghz@$(GHZ_VERSION)

$(BIN)/kubeconform:
	go install github.com/yannh/kubeconform/cmd/kubeconform@$(KUBECONFORM_VERSION)

$(BIN)/kustomize:
	go install sigs.k8s.io/kustomize/kustomize/v5@$(KUSTOMIZE_VERSION)

tools: $(BIN)/buf $(BIN)/protoc-gen-go $(BIN)/protoc-gen-go-grpc $(BIN)/grpcurl $(BIN)/kubeconform $(BIN)/kustomize

## proto: regenerate the Go code from proto/ with pinned plugins.
proto: $(BIN)/buf $(BIN)/protoc-gen-go $(BIN)/protoc-gen-go-grpc
	cd proto && rm -rf gen && $(BIN)/buf generate
	cd proto && $(BIN)/buf build --as-file-descriptor-set -o gen/todoapp.binpb

## build: build both service binaries into bin/.
build:
	go build -o bin/auth-service ./auth-service/cmd/auth-service
	go build -o bin/todo-service ./todo-service/cmd/todo-service

## run: start both services locally on SQLite until Ctrl-C.
run: build $(BIN)/grpcurl
	./deploy/local/run.sh

## test: every unit, store and end-to-end test of every module.
test:
	go test -count=1 $(GO_PACKAGES)

## fuzz: run each access-token parser fuzz target for FUZZTIME.
# FUZZTIME is a count of inputs (Nx) rather than a duration: with a
# duration, Go 1.26's fuzz coordinator can fail a clean run with "context
# deadline exceeded" when the time is up (Go issue 75804, fixed in Go 1.27).
# 2000000x takes about a minute per target on two CPUs.
FUZZTIME ?= 2000000x
FUZZ_TARGETS := FuzzVerify FuzzVerifySegments FuzzJSONScanner
fuzz:
	for target in $(FUZZ_TARGETS); do \
		go test -run='^$$' -fuzz="^$$target$$" -fuzztime=$(FUZZTIME) ./proto/accesstoken || exit 1; \
	done

## validate: render each Kubernetes overlay and check it against the schemas.
validate: $(BIN)/kustomize $(BIN)/kubeconform
	./deploy/validate.sh

## bench: load, scale and memory runs against the real binaries on
## PostgreSQL (TEST_DATABASE_URL); prints the tables BENCHMARKS.md records.
bench: $(BIN)/ghz
	TEST_DATABASE_URL=$${TEST_DATABASE_URL:-$(LOCAL_POSTGRES_URL)} \
	go test -tags bench -run TestBench -v -count=1 -timeout 60m ./deploy/bench

## soak: ten minutes at half the measured capacity (not run by CI).
soak: $(BIN)/ghz
	TEST_DATABASE_URL=$${TEST_DATABASE_URL:-$(LOCAL_POSTGRES_URL)} BENCH_SOAK=1 \
	go test -tags bench -run TestSoak -v -count=1 -timeout 30m ./deploy/bench

## faults: PostgreSQL restart, auth-service kill and SIGTERM under load.
## FAULTS_SHORT=1 runs the shorter form that CI uses.
faults:
	go test -tags faults -v -count=1 -timeout 15m ./deploy/faults

## images: build both service images (needs a Docker engine).
IMAGE_REGISTRY ?= registry.example.com/todoapp
IMAGE_TAG ?= dev
images:
	docker build -f auth-service/Dockerfile -t $(IMAGE_REGISTRY)/auth-service:$(IMAGE_TAG) .
	docker build -f todo-service/Dockerfile -t $(IMAGE_REGISTRY)/todo-service:$(IMAGE_TAG) .

## lint: gofmt, go vet and buf lint.
lint: $(BIN)/buf
	@unformatted=$$(gofmt -l proto auth-service todo-service deploy); \
	if [ -n "$$unformatted" ]; then echo "gofmt needed:"; echo "$$unformatted"; exit 1; fi
	go vet $(GO_PACKAGES)
	go vet -tags bench,faults ./deploy/...
	cd proto && $(BIN)/buf lint

clean:
	rm -rf bin data
