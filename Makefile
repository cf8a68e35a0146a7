# qcluster: the two commands a new user needs are `make cluster` and `make test`.
# Everything else is a step they call. Targets install what they need.

GO        ?= go
OUT       ?= out
GOTESTFLAGS ?=
FUZZTIME  ?= 10s

.PHONY: all deps fetch image test unit fuzz bench cluster lint generate clean

all: test

## deps: install the host's Debian packages (quick when all is there)
deps:
	@./third_party/deps.sh

## fetch: download the guest's Debian artifacts into third_party/cache
fetch: deps
	@./third_party/fetch.sh

## image: build the default OS image into out/testos and the loader into out/loader.efi
image: fetch
	$(GO) run ./testos/build --out $(OUT)

## test: everything CI runs: vet, unit and end-to-end tests, short fuzz runs
test: deps image
	$(GO) vet ./...
	$(GO) test -timeout 25m $(GOTESTFLAGS) ./...
	@$(MAKE) --no-print-directory fuzz

## fuzz: run every fuzz target for FUZZTIME
fuzz:
	@./scripts/fuzz.sh $(FUZZTIME)

## bench: every benchmark, as ratios against baselines measured in the same run
bench: deps image
	@./scripts/bench.sh

## cluster: launch the default 3-node cluster (Ctrl-C stops it)
cluster: deps image
	$(GO) run ./launch

## lint: gazelle and buildifier checks for the Bazel side
lint:
	@./scripts/lint.sh

clean:
	rm -rf $(OUT)
