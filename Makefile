# Entry points for development and CI; the README explains them.
#
# Targets that need a database use $DATABASE_URL when it is set and otherwise start the
# private PostgreSQL cluster under .data/ (cmd/devdb) and use the URL it prints. That
# happens inside those recipes only, so build, lint and db-stop never start a database.

GO ?= go

# with_db starts a recipe line: it exports DATABASE_URL, starting the private cluster
# when the environment names no database. A failed start fails the recipe.
with_db = url="$${DATABASE_URL:-}"; \
	if [ -z "$$url" ]; then url="$$($(GO) run ./cmd/devdb start)" || exit 1; fi; \
	export DATABASE_URL="$$url";

.DEFAULT_GOAL := build
.PHONY: run test bench soak lint build db-start db-stop db-url screenshots dashboard generate api-check

# Serve API, projectors and worker in one process. Audit checkpoints are signed with
# OPSGATE_AUDIT_SIGNING_KEY_FILE, or with a key made once under .data/audit/.
run:
	@$(with_db) if [ -z "$${OPSGATE_AUDIT_SIGNING_KEY_FILE:-}" ]; then \
		export OPSGATE_AUDIT_SIGNING_KEY_FILE=$(CURDIR)/.data/audit/opsgate-dev.key; \
		[ -f $(CURDIR)/.data/audit/opsgate-dev.key ] || { mkdir -p $(CURDIR)/.data/audit && $(GO) run ./cmd/opsgate audit keygen --dir $(CURDIR)/.data/audit opsgate-dev >/dev/null; } || exit 1; \
	fi; exec $(GO) run ./cmd/opsgate serve

# Run every test; each package creates its own database from DATABASE_URL.
# The request decoders are fuzzed briefly first (FUZZTIME each; 0 skips). A count of
# inputs, not a duration: a duration also bounds the baseline pass over the seed corpus,
# and go test fails with "context deadline exceeded" when a loaded machine spends it all
# there (CI did once).
# Extra go test flags: make test TESTFLAGS='-run TestX -v'.
FUZZTIME ?= 3000x
test:
	@if [ "$(FUZZTIME)" != "0" ]; then for f in FuzzDecodeStartBody FuzzDecodeConnection; do \
		out="$$($(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) ./api 2>&1)" || \
		{ printf '%s\nfuzzing %s failed\n' "$$out" "$$f"; exit 1; }; done; fi
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || [ -n "$$OPSGATE_CHROMIUM" ] || \
		echo "note: Chromium not found: the console's browser tests are skipped (install: apt-get install -y chromium)"
	@$(with_db) $(GO) test -count=1 -timeout 15m $(TESTFLAGS) ./...

# Screenshots of every console page at 1280x800 into docs/console/ (needs Chromium).
screenshots:
	@mkdir -p docs/console
	@$(with_db) OPSGATE_SCREENSHOTS=$(CURDIR)/docs/console $(GO) test -count=1 -run TestConsoleInABrowser ./console

# The dashboard's main panels drawn from a quick bench run's /metrics (needs Chromium).
dashboard:
	@mkdir -p docs/monitoring
	@$(with_db) $(GO) run ./cmd/opsgate-bench -quick -dashboard docs/monitoring/dashboard.png

# Run the benchmark; make bench QUICK=1 for a short run.
bench:
	@$(with_db) $(GO) run ./cmd/opsgate-bench $(if $(QUICK),-quick)

# The fault test (docs/RELIABILITY.md): several processes on a PostgreSQL cluster of
# its own under .data/soak, SIGKILLs of each role and a database crash; exits 1 on
# any breach. SHORT=1 for the shorter variant that make test also runs.
# FAILOVER=1 runs the failover soak instead (a primary and its synchronous standby under
# .data/soak-ha, the primary killed, then frozen, and the standby promoted);
# FAILOVER=kill or FAILOVER=freeze runs one variant.
soak:
	@$(GO) run ./cmd/opsgate-soak $(if $(SHORT),-short) $(if $(FAILOVER),-failover $(FAILOVER))

# The published OpenAPI document (opsgate openapi) and the Go client generated from it
# (clients/go/opsgate, oapi-codegen).
OAPI_CODEGEN ?= github.com/oapi-codegen/oapi-codegen/v2/cmd/oapi-codegen@v2.8.2
OASDIFF ?= github.com/oasdiff/oasdiff@v1.39.0
generate:
	@$(GO) run ./cmd/opsgate openapi > clients/go/opsgate/openapi.json
	@cd clients/go/opsgate && $(GO) run $(OAPI_CODEGEN) -config oapi-codegen.yaml openapi.json

# What CI checks of the API document (README, "Compatibility"): the generated client is
# up to date, and the published document breaks nothing of the released one
# (api/released/openapi-v1.json) by oasdiff's rules.
api-check:
	@tmp="$$(mktemp -d)"; trap 'rm -rf "$$tmp"' EXIT; \
	$(GO) run ./cmd/opsgate openapi > "$$tmp/openapi.json" && \
	cp clients/go/opsgate/oapi-codegen.yaml "$$tmp/" && \
	(cd "$$tmp" && $(GO) run $(OAPI_CODEGEN) -config oapi-codegen.yaml openapi.json) || exit 1; \
	for f in openapi.json client.gen.go; do cmp -s "$$tmp/$$f" "clients/go/opsgate/$$f" || \
		{ echo "clients/go/opsgate/$$f is out of date: run make generate" >&2; exit 1; }; done; \
	$(GO) run $(OASDIFF) breaking --fail-on ERR --flatten-allof api/released/openapi-v1.json "$$tmp/openapi.json" || \
		{ echo "the API document breaks the released one (api/released/openapi-v1.json)" >&2; exit 1; }; \
	echo "api-check: the generated client is up to date; nothing of the released document is broken"

lint:
	@out="$$(find . \( -path ./.data -o -path ./.git -o -path ./bin \) -prune \
		-o -name '*.go' -exec gofmt -l {} +)" || exit 1; \
	if [ -n "$$out" ]; then printf 'gofmt -l lists unformatted files:\n%s\n' "$$out" >&2; exit 1; fi
	$(GO) vet ./...
	$(GO) run honnef.co/go/tools/cmd/staticcheck@latest ./...

build:
	$(GO) build -o bin/opsgate ./cmd/opsgate

# The private cluster; db-start prints its DATABASE_URL.
db-start:
	@$(GO) run ./cmd/devdb start

db-stop:
	@$(GO) run ./cmd/devdb stop
	@$(GO) run ./cmd/devdb -state .data/soak stop 2>/dev/null

db-url:
	@$(GO) run ./cmd/devdb url
