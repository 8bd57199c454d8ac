# shapelog — build, test, lint, bench, demo.
GO      ?= go
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X main.version=$(VERSION)

.PHONY: build test lint fuzz bench demo clean proto

build:
	$(GO) build -trimpath -ldflags "$(LDFLAGS)" -o bin/shapelog ./engine/cmd/shapelog
	$(GO) build -trimpath -ldflags "-s -w" -o bin/source-shapelog ./source
	$(GO) build -trimpath -ldflags "-s -w" -o bin/destination-shapelog ./destination

# The whole suite against throwaway PostgreSQL clusters (or $$DATABASE_URL).
test: build
	$(GO) test -race -count=1 -timeout 30m ./...

# Each fuzz target for $(FUZZTIME), one after another (go test fuzzes one
# target per package at a time). `make test` runs their seed corpora
# (testdata/fuzz/<target>/); a failure found here is saved there too.
# FUZZFLAGS passes more flags, e.g. FUZZFLAGS=-parallel=1.
FUZZTIME    ?= 30s
FUZZFLAGS   ?=
FUZZ_TARGETS := engine/where:FuzzParse engine/where:FuzzMatch internal/jsonscan:FuzzSkip internal/jsonscan:FuzzScalar \
	protocol:FuzzReader engine/importer:FuzzParseRequest engine/importer:FuzzParseProtobufRequest engine/httpapi:FuzzCursors

fuzz:
	@set -e; for t in $(FUZZ_TARGETS); do \
		echo "== $${t#*:} in ./$${t%%:*} for $(FUZZTIME)"; \
		$(GO) test -run '^$$' -fuzz "^$${t#*:}\$$" -fuzztime $(FUZZTIME) $(FUZZFLAGS) ./$${t%%:*}; \
	done

lint:
	$(GO) vet ./...
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); echo "gofmt needed"; exit 1; }
	$(GO) run honnef.co/go/tools/cmd/staticcheck@v0.8.2 ./...

bench: build
	$(GO) run ./bench $(BENCH_ARGS)

demo: build
	$(GO) run ./internal/demo

clean:
	rm -rf bin

# Regenerates engine/recordpb's .pb.go files (needs protoc and
# protoc-gen-go v1.33.0 on PATH; CI uses the committed files).
proto:
	cd engine/recordpb && protoc --go_out=. --go_opt=paths=source_relative airbyte.proto frames.proto
