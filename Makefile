# qcluster: the two commands a new user needs are `make cluster` and `make test`.
# Everything else is a step they call. Targets install what they need.

GO          ?= go
OUT         ?= out
GOTESTFLAGS ?=
FUZZTIME    ?= 10s
# Flags for `make cluster`, e.g. make cluster ARGS="--nodes 5"
ARGS        ?=
GRPCURL     ?= github.com/fullstorydev/grpcurl/cmd/grpcurl@v1.9.3

.PHONY: all deps fetch pin image tools test unit e2e fuzz bench bench-disk bench-launch bench-warm cluster lint gazelle generate clean

all: test

## deps: install the host's Debian packages (quick when all is there)
deps:
	@./third_party/deps.sh

## fetch: download the guest's Debian artifacts pinned in third_party/debian.lock into third_party/cache
fetch: deps
	@./third_party/fetch.sh

## pin: pin the newest Debian artifacts apt offers (rewrites third_party/debian.lock), then fetch them
pin: deps
	@./third_party/fetch.sh --pin

## image: build the default OS image into out/testos and the loader into out/loader.efi
image: fetch
	@$(GO) run ./testos/build --out $(OUT)

## tools: the helper binaries the launcher runs (nanoswitch) and the launcher itself
tools:
	@$(GO) build -o $(OUT)/bin/nanoswitch ./nanoswitch/cmd/nanoswitch
	@$(GO) build -o $(OUT)/bin/cluster ./launch
	@# grpcurl, for the e2e test that runs the summary's grpcurl line as printed. Installed here
	@# rather than as a go.mod tool: its dependencies would join everyone's module graph.
	@GOBIN=$(abspath $(OUT))/bin GOFLAGS=-buildvcs=false $(GO) install $(GRPCURL)

## test: everything CI runs: vet, lint, unit and end-to-end tests, short fuzz runs
test: deps image tools
	$(GO) vet ./...
	@./scripts/lint.sh
	$(GO) test -timeout 28m $(GOTESTFLAGS) ./...
	@./scripts/fuzz.sh $(FUZZTIME)

## unit: the tests that boot no VM (go test -short)
unit: deps
	$(GO) test -short $(GOTESTFLAGS) ./...

## e2e: the end-to-end suites alone
e2e: deps image tools
	$(GO) test -timeout 28m -v $(GOTESTFLAGS) ./e2e/...

## fuzz: run every fuzz target for FUZZTIME
fuzz:
	@./scripts/fuzz.sh $(FUZZTIME)

## bench: every benchmark, as ratios against baselines measured in the same run
bench: deps image tools
	@./scripts/bench.sh

bench-disk: deps image tools
	@./scripts/bench-disk.sh

bench-launch: deps image tools
	@./scripts/bench-launch.sh

## bench-warm: restore against cold launch, snapshot time and size, memory of restored clusters
bench-warm: deps image tools
	@./scripts/bench-warm.sh

## cluster: launch the default 3-node cluster (Ctrl-C stops it)
cluster: deps image tools
	@echo "Launching; press Ctrl-C to stop the cluster and remove its state."
	@$(OUT)/bin/cluster $(ARGS)

## lint: gazelle and buildifier checks for the Bazel side
lint:
	@./scripts/lint.sh

## gazelle: regenerate BUILD.bazel files and MODULE.bazel's use_repo after Go changes
gazelle:
	@./scripts/gazelle.sh

## generate: regenerate committed generated code (protobuf)
generate:
	$(GO) generate ./testos/... ./nanoswitch/... ./control/...

clean:
	rm -rf $(OUT)
