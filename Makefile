# Sigil build. `make` builds the BPF object, the native addon and the
# TypeScript; a second `make` with nothing changed does nothing.
# `make deps` installs what a fresh Debian machine is missing.

SHELL := /bin/bash
.DEFAULT_GOAL := all

CLANG ?= clang
BPFTOOL ?= bpftool
NODE ?= node
# Node's headers for node-gyp: the tree above the node binary holds include/node.
NODEDIR ?= $(shell dirname "$$(dirname "$$(readlink -f "$$(command -v $(NODE))")")")

APT_PACKAGES := clang llvm libbpf-dev bpftool libelf-dev zlib1g-dev pkg-config make g++ \
	python3 util-linux iproute2 procps qemu-system-x86 busybox-static cpio apparmor

BPF_OUT := bpf/.output
BPF_SOURCES := $(wildcard bpf/*.bpf.c)
BPF_OBJECTS := $(patsubst bpf/%.bpf.c,$(BPF_OUT)/%.bpf.o,$(BPF_SOURCES))
BPF_HEADERS := $(wildcard bpf/include/*.h)
VMLINUX_H := $(BPF_OUT)/vmlinux.h
SIGIL_BPF := $(BPF_OUT)/sigil.bpf.o

NATIVE := build/Release/sigil_native.node
NATIVE_SOURCES := $(wildcard native/*.cc native/*.h) binding.gyp

TS_SOURCES := $(shell find src -name '*.ts' 2>/dev/null)
TS_STAMP := dist/.stamp

.PHONY: all deps bpf native ts spire run test host-test vm-test clean

all: bpf native ts

deps:
	@bash scripts/install-deps.sh $(APT_PACKAGES)

bpf: $(SIGIL_BPF)

$(VMLINUX_H):
	@mkdir -p $(BPF_OUT)
	@test -r /sys/kernel/btf/vmlinux || \
		{ echo "error: /sys/kernel/btf/vmlinux is missing: this kernel has no BTF" >&2; exit 1; }
	$(BPFTOOL) btf dump file /sys/kernel/btf/vmlinux format c > $@.tmp && mv $@.tmp $@

$(BPF_OUT)/%.bpf.o: bpf/%.bpf.c $(BPF_HEADERS) $(VMLINUX_H)
	$(CLANG) -g -O2 -Wall -target bpf -D__TARGET_ARCH_x86 -I$(BPF_OUT) -Ibpf/include \
		-c $< -o $@

# libbpf's static linker joins the objects and resolves the extern maps. The
# object that defines the maps goes first: libbpf 1.1 mislocates map
# relocations when an extern declaration precedes the definition.
$(SIGIL_BPF): $(BPF_OUT)/maps.bpf.o $(filter-out $(SIGIL_BPF) $(BPF_OUT)/maps.bpf.o,$(BPF_OBJECTS))
	$(BPFTOOL) gen object $@ $^

# BPF LSM programs: a second object, loaded only where the kernel runs BPF
# LSM, because libbpf loads every program of an object and the host kernel
# refuses LSM programs. It reuses the main object's pinned maps.
LSM_BPF_SOURCES := $(wildcard bpf/lsm/*.bpf.c)
LSM_BPF_OBJECTS := $(patsubst bpf/lsm/%.bpf.c,$(BPF_OUT)/lsm/%.bpf.o,$(LSM_BPF_SOURCES))
LSM_BPF_HEADERS := $(wildcard bpf/lsm/*.h)
SIGIL_LSM_BPF := $(BPF_OUT)/sigil-lsm.bpf.o

bpf: $(SIGIL_LSM_BPF)

$(BPF_OUT)/lsm/%.bpf.o: bpf/lsm/%.bpf.c $(BPF_HEADERS) $(LSM_BPF_HEADERS) $(VMLINUX_H)
	@mkdir -p $(@D)
	$(CLANG) -g -O2 -Wall -target bpf -D__TARGET_ARCH_x86 -I$(BPF_OUT) -Ibpf/include \
		-c $< -o $@

# As for sigil.bpf.o, the object that defines the maps goes first.
$(SIGIL_LSM_BPF): $(BPF_OUT)/lsm/maps.bpf.o $(filter-out $(BPF_OUT)/lsm/maps.bpf.o,$(LSM_BPF_OBJECTS))
	$(BPFTOOL) gen object $@ $^

# tracepoint-kill programs: a third object, loaded where BPF LSM is not
# usable, on the main object's pinned maps like the LSM object.
TP_BPF_SOURCES := $(wildcard bpf/tracepoint/*.bpf.c)
TP_BPF_OBJECTS := $(patsubst bpf/tracepoint/%.bpf.c,$(BPF_OUT)/tracepoint/%.bpf.o,$(TP_BPF_SOURCES))
TP_BPF_HEADERS := $(wildcard bpf/tracepoint/*.h)
SIGIL_TP_BPF := $(BPF_OUT)/sigil-tp.bpf.o

bpf: $(SIGIL_TP_BPF)

$(BPF_OUT)/tracepoint/%.bpf.o: bpf/tracepoint/%.bpf.c $(BPF_HEADERS) $(TP_BPF_HEADERS) $(VMLINUX_H)
	@mkdir -p $(@D)
	$(CLANG) -g -O2 -Wall -target bpf -D__TARGET_ARCH_x86 -I$(BPF_OUT) -Ibpf/include \
		-c $< -o $@

# As for sigil.bpf.o, the object that defines the maps goes first.
$(SIGIL_TP_BPF): $(BPF_OUT)/tracepoint/maps.bpf.o $(filter-out $(BPF_OUT)/tracepoint/maps.bpf.o,$(TP_BPF_OBJECTS))
	$(BPFTOOL) gen object $@ $^

native: $(NATIVE)

$(NATIVE): $(NATIVE_SOURCES) node_modules/.package-lock.json
	@test -r "$(NODEDIR)/include/node/node_api.h" || { \
		echo "error: Node.js headers not found in $(NODEDIR)/include/node;" \
			"install the headers of node $$($(NODE) --version) there or set NODEDIR" >&2; \
		exit 1; }
	npx --no-install node-gyp rebuild --nodedir="$(NODEDIR)" --loglevel=warn

ts: $(TS_STAMP)

$(TS_STAMP): $(TS_SOURCES) tsconfig.json node_modules/.package-lock.json
	npx --no-install tsc -p tsconfig.json
	@touch $@

node_modules/.package-lock.json: package-lock.json
	npm ci --no-audit --no-fund

# SPIRE v1.13.3 built from the Go module proxy into ~/.cache/sigil; about 11
# minutes on 2 cores the first time, nothing when the binaries are there.
spire:
	@bash scripts/spire/build.sh

run: deps all
	bash examples/demo.sh

test: deps all spire
	$(MAKE) --no-print-directory host-test
	$(MAKE) --no-print-directory vm-test

# Tests on the running kernel (as root): BPF programs, agent, SPIRE.
host-test:
	npx --no-install vitest run --exclude 'test/vm/**'

# Tests that need BPF LSM or AppArmor boot Linux 6.1 under qemu (TCG, no
# network device): see scripts/vm/README.md. The first run downloads the
# kernel package into ~/.cache/sigil.
vm-test:
	npx --no-install vitest run test/vm

clean:
	rm -rf $(BPF_OUT) build dist
