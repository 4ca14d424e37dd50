# netns-cni build recipes. Every target that needs a tool installs it when it is
# missing, so `make demo` and `make test` work on a fresh Debian machine as root.

GO        ?= go
PREFIX    ?= /opt/cni
BINDIR    ?= $(PREFIX)/bin
CONFDIR   ?= /etc/cni/net.d
DESTDIR   ?=
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS   := -s -w -X github.com/netns-cni/netns-cni/pkg/version.Version=$(VERSION)
GOBUILD   := CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)'

# Every binary and the package it is built from. The node agent lives in a
# module of its own (node/), so that client-go never reaches the plugins.
PLUGINS   := loopback veth-ptp bridge-nat
PKG_loopback       := ./plugins/loopback
PKG_veth-ptp       := ./plugins/veth-ptp
PKG_bridge-nat     := ./plugins/bridge-nat
PKG_cnitool        := ./test/cnitool
PKG_cnibench       := ./test/cnibench
PKG_demo           := ./cmd/demo
PKG_mkimage        := ./cmd/mkimage
PKG_netns-cni      := ./cmd/netns-cni
PKG_netns-cni-node := ./node/cmd/netns-cni-node
BINARIES  := $(addprefix bin/,$(PLUGINS) netns-cni cnitool cnibench demo mkimage netns-cni-node)
# The plugins again, with the fault-injection hooks the integration tests
# use (build tag faultinject); never installed.
FAULT_BINARIES := $(addprefix bin/faultinject/,$(PLUGINS))
# The reference plugins at the version go.mod pins (its tool directives),
# built from the module: the other side of the migration tests.
UPSTREAM_BINARIES := bin/upstream/ptp bin/upstream/bridge bin/upstream/host-local bin/upstream/portmap
PKG_upstream/ptp        := github.com/containernetworking/plugins/plugins/main/ptp
PKG_upstream/bridge     := github.com/containernetworking/plugins/plugins/main/bridge
PKG_upstream/host-local := github.com/containernetworking/plugins/plugins/ipam/host-local
PKG_upstream/portmap    := github.com/containernetworking/plugins/plugins/meta/portmap
# The Go modules: the plugins' own, the node agent's, the end-to-end tests'.
MODULES   := . node test/e2e
# The node image: the tag deploy/kubernetes/kustomization.yaml names.
IMAGE     ?= docker.io/netns-cni/node:v0.3.0

# Debian packages the demo and the tests use, and the files that tell
# whether each is present; the runtimes only for the end-to-end tests.
APT_PACKAGES := iproute2 iptables nftables iputils-ping containernetworking-plugins
APT_PROBES   := /usr/sbin/ip /usr/sbin/iptables /usr/sbin/nft /usr/bin/ping /usr/lib/cni/host-local
E2E_PACKAGES := containerd runc busybox-static podman
E2E_PROBES   := /usr/bin/containerd /usr/sbin/runc /bin/busybox /usr/bin/podman

# Go tools, pinned.
GOBIN                 := $(CURDIR)/.tools
GOLANGCI_LINT_VERSION := v2.15.0

# The Kubernetes cluster of test-kubernetes, built from the Go module proxy
# (tools/kubernetes, tools/etcd) into .tools and reused when present.
# The versions are pinned by tools/kubernetes/go.mod and tools/etcd/go.mod;
# K8S_VERSION names the directory and stamps the binaries' version.
K8S_VERSION  := v1.37.2
K8S_BIN      := $(GOBIN)/kubernetes-$(K8S_VERSION)
K8S_CMDS     := kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl
K8S_MAJOR    := $(word 1,$(subst ., ,$(K8S_VERSION:v%=%)))
K8S_MINOR    := $(word 2,$(subst ., ,$(K8S_VERSION:v%=%)))
K8S_VERFLAGS := $(foreach kv,gitVersion=$(K8S_VERSION) gitMajor=$(K8S_MAJOR) gitMinor=$(K8S_MINOR) gitTreeState=clean,-X k8s.io/component-base/version.$(kv))

TEST_FLAGS ?= -count=1
FUZZTIME   ?= 10s

.PHONY: all build image test unit fuzz integration e2e test-kubernetes demo deps-e2e apt bench lint install install-config uninstall clean deps tools

all: build

build: $(BINARIES)

bin/netns-cni-node: FORCE
	@mkdir -p bin
	cd node && $(GOBUILD) -o ../$@ $(patsubst ./node/%,./%,$(PKG_netns-cni-node))

bin/upstream/%: FORCE
	@mkdir -p bin/upstream
	$(GO) build -o $@ $(PKG_upstream/$*)

bin/faultinject/%: FORCE
	@mkdir -p bin/faultinject
	$(GO) build -tags faultinject -o $@ $(PKG_$*)

bin/%: FORCE
	@mkdir -p bin
	$(GOBUILD) -o $@ $(PKG_$*)

FORCE:

# image: the DaemonSet's image as an OCI archive, without a Docker engine.
# A release's tag on an image of another commit would reach nodes that
# hold the real release and pull IfNotPresent: said, not refused.
image: build
	./bin/mkimage -bin bin -out bin/netns-cni-node-image.tar -name $(IMAGE)
	@tag='$(lastword $(subst :, ,$(IMAGE)))'; here=$$(git describe --tags --always --dirty 2>/dev/null); \
	case "$$tag" in v[0-9]*) if [ -n "$$here" ] && [ "$$here" != "$$tag" ]; then \
	  echo "note: the image is tagged $$tag, the release, but built from $$here: for a test cluster name it for this tree (make image IMAGE=REGISTRY/netns-cni/node:$$here) and set newTag: $$here in deploy/kubernetes/kustomization.yaml"; fi;; esac

# deps installs the Debian packages the tests and demo need (apt-get update
# at most once an hour), when any is
# missing. It never touches the network configuration of the machine.
deps:
	@$(MAKE) --no-print-directory apt PKGS="$(APT_PACKAGES)" PROBES="$(APT_PROBES)"

deps-e2e: deps
	@$(MAKE) --no-print-directory apt PKGS="$(E2E_PACKAGES)" PROBES="$(E2E_PROBES)"

apt:
	@missing=0; for p in $(PROBES); do [ -e $$p ] || missing=1; done; \
	if [ $$missing = 1 ]; then \
		if [ "$$(id -u)" != 0 ]; then echo "deps: run as root to install: $(PKGS)" >&2; exit 1; fi; \
		echo "deps: installing $(PKGS)"; \
		export DEBIAN_FRONTEND=noninteractive; \
		find /var/lib/apt/lists -maxdepth 1 -name '*Packages*' -mmin -60 2>/dev/null | grep -q . || apt-get update -qq; \
		apt-get install -y -qq --no-install-recommends $(PKGS) >/dev/null; \
	fi

# test: the whole suite. Unit tests first (no root needed), then the
# integration tests that run the built binaries in sandboxed namespaces.
test: deps deps-e2e build lint unit fuzz integration e2e test-kubernetes

# unit: vet, gofmt and the tests of every package but the integration and
# end-to-end suites, with the race detector. Those that need root build a
# sandbox of their own and skip without root.
unit:
	@for m in $(MODULES); do (cd $$m && $(GO) vet ./...) || exit 1; done
	@test -z "$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))" || { gofmt -l . ; echo "gofmt: files above need formatting" >&2; exit 1; }
	$(GO) test $(TEST_FLAGS) -race -short ./pkg/... ./plugins/... ./test/cnitool/... ./cmd/...
	cd node && NETNS_CNI_BIN=$(CURDIR)/bin $(GO) test $(TEST_FLAGS) -race -short ./...

# fuzz runs each fuzz target for a short fixed time.
fuzz:
	$(GO) test -run '^$$' -fuzz '^FuzzParse$$' -fuzztime $(FUZZTIME) ./pkg/ipam

integration: build $(FAULT_BINARIES) $(UPSTREAM_BINARIES)
	NETNS_CNI_BIN=$(CURDIR)/bin NETNS_CNI_FAULT_BIN=$(CURDIR)/bin/faultinject NETNS_CNI_UPSTREAM_BIN=$(CURDIR)/bin/upstream \
		$(GO) test $(TEST_FLAGS) ./test/integration/...

# e2e: the plugins under real runtimes — containerd (ctr and CRI), podman,
# the upstream cnitool — each in a private mount and network namespace of
# its own.
e2e: build $(GOBIN)/cnitool
	./bin/mkimage -bin bin -out bin/netns-cni-node-image.tar -name docker.io/netns-cni/node:test
	cd test/e2e && NETNS_CNI_BIN=$(CURDIR)/bin UPSTREAM_CNITOOL=$(GOBIN)/cnitool NETNS_CNI_IMAGE=$(CURDIR)/bin/netns-cni-node-image.tar \
		$(GO) test $(TEST_FLAGS) -skip '^TestKubernetes$$' ./...

# test-kubernetes: deploy/kubernetes in a real two-node cluster (Kubernetes
# and etcd as tools/kubernetes and tools/etcd pin them) that the test
# builds, starts and removes; IPv4, then dual-stack. The first run builds
# the components (7-18 minutes on 2 cores), rebuilt when a go.mod changes.
test-kubernetes: deps-e2e build $(addprefix $(K8S_BIN)/,$(K8S_CMDS) etcd)
	cd test/e2e && NETNS_CNI_BIN=$(CURDIR)/bin NETNS_CNI_K8S_BIN=$(K8S_BIN) \
		$(GO) test $(TEST_FLAGS) -v -timeout 30m -run '^TestKubernetes$$' .

$(addprefix $(K8S_BIN)/,$(K8S_CMDS)) &: tools/kubernetes/go.mod tools/kubernetes/go.sum
	@mkdir -p $(K8S_BIN)
	cd tools/kubernetes && CGO_ENABLED=0 $(GO) build -trimpath -ldflags '-s -w $(K8S_VERFLAGS)' -o $(K8S_BIN)/ \
		$(addprefix k8s.io/kubernetes/cmd/,$(K8S_CMDS))

$(K8S_BIN)/etcd: tools/etcd/go.mod tools/etcd/go.sum
	@mkdir -p $(K8S_BIN)
	cd tools/etcd && CGO_ENABLED=0 $(GO) build -trimpath -ldflags '-s -w' -o $@ go.etcd.io/etcd/server/v3

# demo: networks pods in a sandbox of its own and reports what happened.
demo: deps build
	./bin/demo -bin $(CURDIR)/bin

# Benchmarks keep their stores on tmpfs by default: this VM's disk makes
# file creation cost swing 25µs-1ms from minute to minute, which hides the
# store's own cost. BENCH_TMPDIR=/var/tmp measures on disk.
BENCH_TMPDIR ?= /dev/shm
bench: deps build $(UPSTREAM_BINARIES)
	TMPDIR=$(BENCH_TMPDIR) NETNS_CNI_BIN=$(CURDIR)/bin $(GO) test -run '^$$' -bench . -benchmem ./...
	./bin/cnibench -suite veth-ptp -n 100 -parallel 8 -scale 1000
	./bin/cnibench -suite bridge-nat -n 100 -parallel 8 -big 250 -scale 1000
	./bin/cnibench -suite containerd-shape -n 50

tools: $(GOBIN)/golangci-lint $(GOBIN)/cnitool

# The upstream cnitool, for the e2e tests.
CNITOOL_VERSION := v1.3.1
$(GOBIN)/cnitool:
	GOBIN=$(GOBIN) $(GO) install github.com/containernetworking/cni/cnitool@$(CNITOOL_VERSION)

$(GOBIN)/golangci-lint:
	GOBIN=$(GOBIN) $(GO) install github.com/golangci/golangci-lint/v2/cmd/golangci-lint@$(GOLANGCI_LINT_VERSION)

lint: tools
	@for m in $(MODULES); do echo "lint $$m"; (cd $$m && $(GO) vet ./... && $(GOBIN)/golangci-lint run ./...) || exit 1; done

# install: a plugin of the same name that is not netns-cni's (the runtime's
# loopback, which containerd's CRI runs for every sandbox) is kept as
# <name>.before-netns-cni, and uninstall puts it back.
install: build
	install -d $(DESTDIR)$(BINDIR)
	@for p in $(PLUGINS); do f=$(DESTDIR)$(BINDIR)/$$p; \
	  if [ -e $$f ] && ! grep -qs 'github.com/netns-cni/netns-cni' $$f && [ ! -e $$f.before-netns-cni ]; then \
	    mv $$f $$f.before-netns-cni && echo "kept the $$p that was there as $$f.before-netns-cni (make uninstall restores it)"; fi; done
	install -m 0755 $(addprefix bin/,$(PLUGINS) netns-cni) $(DESTDIR)$(BINDIR)/
	@echo "installed $(PLUGINS) and the operator command netns-cni into $(DESTDIR)$(BINDIR)"

# install-config puts example configurations into the runtime config
# directory: all of them, or those named, e.g. EXAMPLES=10-veth-ptp.conflist.
# Only on request: it changes what every runtime on the node uses. A file
# of the same name that differs (an edited copy) is kept; FORCE=1
# replaces it.
EXAMPLES ?= $(notdir $(wildcard examples/*.conflist))
install-config:
	install -d $(DESTDIR)$(CONFDIR)
	@for e in $(EXAMPLES); do f=$(DESTDIR)$(CONFDIR)/$$e; \
	  if [ -e $$f ] && ! cmp -s examples/$$e $$f && [ "$(FORCE)" != 1 ]; then echo "kept $$f: it differs from the example (FORCE=1 replaces it)"; continue; fi; \
	  install -m 0644 examples/$$e $$f && echo "installed $$e into $(DESTDIR)$(CONFDIR)"; done

# uninstall removes what install and install-config put in place. The
# networks' state (addresses under /var/lib/cni/networks, rules, links)
# goes with their pods; see the README's "Uninstall".
# An example configuration is removed only when it is still the one
# shipped: an edited copy stays, and so does another file of its name.
uninstall:
	@for p in $(PLUGINS) netns-cni; do f=$(DESTDIR)$(BINDIR)/$$p; \
	  if [ -e $$f ] && ! grep -qs 'github.com/netns-cni/netns-cni' $$f; then echo "kept $$f: not netns-cni's"; continue; fi; \
	  rm -f $$f; \
	  if [ -e $$f.before-netns-cni ]; then mv $$f.before-netns-cni $$f && echo "restored the $$p that was there before install"; fi; done
	@for e in $(notdir $(wildcard examples/*.conflist)); do f=$(DESTDIR)$(CONFDIR)/$$e; \
	  if [ -e $$f ]; then if cmp -s examples/$$e $$f; then rm -f $$f; else echo "kept $$f: not the shipped example"; fi; fi; done
	@echo "removed netns-cni's plugins from $(DESTDIR)$(BINDIR), and from $(DESTDIR)$(CONFDIR) the examples still as shipped"

clean:
	rm -rf bin .tools
