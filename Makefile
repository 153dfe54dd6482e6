# dsrlb: `make demo` runs the appliance in the namespace testbed,
# `make test` runs every test, `make bench` measures the data plane.
# Every target installs what it needs (Debian packages, Go modules) itself.

SHELL := /bin/bash
GO ?= go
BIN := bin
PKGS := libdpdk-dev dpdk-dev libpcap-dev pkg-config tshark iproute2 frr wrk curl \
        iputils-ping tcpdump procps ethtool valgrind python3-scapy python3-yaml
# What the container image's test needs: Debian's Docker, debootstrap (and
# the archive's keyring) to make base images where no registry is
# reachable, docker-compose to check docker/compose.yaml.
DOCKER_PKGS := docker.io debootstrap debian-archive-keyring docker-compose
# Go tests of packages using DPDK or namespaces share the machine's 2 cores:
# run packages one after another. The timeout is per package: testbed/e2e's
# TestDocker alone took 6 to 19 minutes on a fresh machine (debootstrap, a
# cold Go build in the image; docker/README.md).
GOTEST_FLAGS ?= -p 1 -count=1 -timeout 60m
# HAProxy: the L7 proxies behind dsrlb in the tier-2 e2e test (docs/tier2.md).
PKGS += haproxy
# nftables: a backend that silently drops SYNs in the passive detection e2e test.
PKGS += nftables
# Chromium: the web console's tests drive it headless (testbed/e2e TestConsole).
PKGS += chromium
export DEBIAN_FRONTEND := noninteractive

.PHONY: all deps docker-deps build test unit e2e demo bench fuzz vet image clean console console-check console-screenshots

all: build

# apt-install installs the Debian packages of $(1) that are missing. It is
# idempotent and skips apt entirely when everything is present.
define apt-install
	@missing=$$(for p in $(1); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q 'install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "$@: installing $$missing"; \
		apt-get update -qq && apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi
endef

# deps installs the Debian packages the build, tests and demo use.
deps:
	$(call apt-install,$(PKGS))
	@$(GO) mod download

# docker-deps installs what TestDockerAppliance needs (docker/README.md).
docker-deps:
	$(call apt-install,$(DOCKER_PKGS))

build: deps
	@mkdir -p $(BIN)
	$(GO) build -o $(BIN)/dsrlb ./cmd/dsrlb
	$(GO) build -o $(BIN)/dsrctl ./cmd/dsrctl

vet: deps
	$(GO) vet ./...

# test runs every package verbosely into $(TESTLOG) and prints package
# results, failures and the TIMING/RESULT lines the end-to-end tests measure
# (BGP withdrawal and recovery times, traffic splits). Then it runs the
# packages whose goroutines share memory (the worker and its readers, the
# store and its publishers) again under the race detector, appending to the
# same log; a race fails the test that met it.
TESTLOG ?= /tmp/dsrlb-test.log
RACEPKGS := ./pipeline/... ./control/...
TESTFILTER := grep --line-buffered -E '^(ok|FAIL|---|panic:)|^\s+--- FAIL|_test\.go:[0-9]+: (TIMING|RESULT)'
test: build vet docker-deps console-check
	@set -o pipefail; $(GO) test -v $(GOTEST_FLAGS) ./... 2>&1 | tee $(TESTLOG) | $(TESTFILTER); \
	rc=$$?; echo "race: go test -race $(RACEPKGS)"; \
	$(GO) test -race -v $(GOTEST_FLAGS) $(RACEPKGS) 2>&1 | tee -a $(TESTLOG) | $(TESTFILTER) || rc=1; \
	if [ $$rc -ne 0 ]; then echo "why (testbed/failures.sh: what each failed test logged last):"; bash testbed/failures.sh $(TESTLOG); fi; \
	echo "full test log: $(TESTLOG)"; exit $$rc

demo: build
	bash testbed/demo.sh

bench: build
	bash testbed/bench.sh

# image builds the appliance's container image from the public base
# images (docker/README.md); IMAGE names it.
IMAGE ?= dsrlb:latest
image:
	DOCKER_BUILDKIT=1 docker build --network host -f docker/Dockerfile -t $(IMAGE) .

# console bundles the web console: npm installs the exact versions of
# api/console/package-lock.json (uPlot, esbuild) and esbuild bundles
# api/console/src into api/console/dist, which the api package embeds.
# dist is committed, so `go build` needs no npm; the bundle is the same
# bytes on every run (pinned versions, no timestamps): console-check
# rebuilds it and fails if it differs from the committed one.
CONSOLE := api/console
console:
	@command -v npm >/dev/null || { apt-get update -qq && apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null; }
	cd $(CONSOLE) && npm ci --no-audit --no-fund --loglevel=error && npm run --silent build

console-check: console
	git diff --exit-code --stat -- $(CONSOLE)/dist

# console-screenshots runs the console's e2e test in headless Chromium and
# writes its screenshots to docs/.
console-screenshots: build
	$(GO) test -count=1 -run 'TestConsole$$' ./testbed/e2e -v -screenshots $(CURDIR)/docs

fuzz: deps
	$(GO) test ./pipeline/ -run XXX -fuzz '^FuzzProcess$$' -fuzztime 60s
	$(GO) test ./pipeline/ -run XXX -fuzz '^FuzzProcess6$$' -fuzztime 60s
	$(GO) test ./cmd/dsrctl/decap/ -run XXX -fuzz '^FuzzProgram$$' -fuzztime 60s

clean:
	rm -rf $(BIN)
