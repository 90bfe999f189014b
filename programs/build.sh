#!/usr/bin/env bash
# Compiles every programs/*.c into programs/build/NAME.o with clang (-O2 -g -target bpf;
# sources named NAME.bpfeb.c with -target bpfeb).
# Tests name the source of each object they use: programs/NAME.c -> programs/build/NAME.o.
# `build.sh dataplane` builds only the mesh dataplane (clang alone), which the
# `handover` binary embeds for `handover demo`.
set -euo pipefail
cd "$(dirname "$0")"
mkdir -p build
shopt -s nullglob
build_dataplane() {
    # Mesh dataplane versions driven by the meshd daemon (demo/):
    # programs/dataplane/vN.c -> programs/build/dataplane/vN.o. -mcpu=v3 for atomic fetch-add.
    mkdir -p build/dataplane
    for src in dataplane/*.c; do
        out="build/${src%.c}.o"
        stale=0
        [ -e "$out" ] || stale=1
        # A version may include another's source (v3.c includes v2.c).
        for dep in dataplane/*.c dataplane/*.h; do [ "$dep" -nt "$out" ] && stale=1; done
        if [ "$stale" = 1 ]; then
            clang -O2 -g -target bpf -mcpu=v3 -Wall -Werror \
                -I/usr/include/x86_64-linux-gnu -c "$src" -o "$out"
        fi
    done
}
if [ "${1:-}" = dataplane ]; then
    build_dataplane
    exit 0
fi
for src in *.c; do
    out="build/${src%.c}.o"
    # Sources named NAME.bpfeb.c are built big-endian.
    target=bpf
    case "$src" in *.bpfeb.c) target=bpfeb ;; esac
    if [ ! -e "$out" ] || [ "$src" -nt "$out" ] || [ -n "$(find . -maxdepth 1 -name '*.h' -newer "$out")" ]; then
        clang -O2 -g -target "$target" -Wall -Werror \
            -I/usr/include/x86_64-linux-gnu -I. \
            -c "$src" -o "$out"
    fi
done
# Map-diff fixture pairs: programs/diff/NAME.{old,new}.c -> programs/build/diff/NAME.{old,new}.o.
mkdir -p build/diff
for src in diff/*.c; do
    out="build/${src%.c}.o"
    if [ ! -e "$out" ] || [ "$src" -nt "$out" ] || [ diff/common.h -nt "$out" ]; then
        clang -O2 -g -target bpf -Wall -Werror \
            -I/usr/include/x86_64-linux-gnu -c "$src" -o "$out"
    fi
done
build_dataplane
# Variants of the sources above, for object shapes a compiler or linker produces from the
# same code: programs/build/NAME.VARIANT.o.
variant() {
    local out="build/$1" src="$2"
    shift 2
    if [ ! -e "$out" ] || [ "$src" -nt "$out" ]; then
        clang "$@" -Wall -Werror -I/usr/include/x86_64-linux-gnu -I. -c "$src" -o "$out"
    fi
}
# Instruction set versions (clang 14 knows v1 to v3).
for cpu in v1 v2 v3; do
    variant "subprogs.$cpu.o" subprogs.c -O2 -g -target bpf -mcpu="$cpu"
done
# The engine's version 1 with a smaller backends map (a shrink).
variant engine_v1.small.o engine_v1.c -O2 -g -target bpf -DBACKENDS_MAX=1024
# Unoptimised: every local on the stack, no inlining.
variant map_types_edge.O0.o map_types_edge.c -O0 -g -target bpf
# One section per function: subprograms in .text.NAME instead of .text.
variant subprogs.fsections.o subprogs.c -O2 -g -target bpf -ffunction-sections
# Big-endian build of the call, callback and tail call fixture.
variant subprogs.bpfeb.o subprogs.c -O2 -g -target bpfeb
# Legacy map records of 20 bytes (struct bpf_map_def) instead of 28.
variant legacy_maps.short.o legacy_maps.c -O2 -g -target bpf -DLEGACY_DEF_SHORT
# No debug info at all, so no .BTF: legacy maps still parse, BTF-defined maps cannot.
variant legacy_maps.g0.o legacy_maps.c -O2 -g0 -target bpf
variant subprogs.g0.o subprogs.c -O2 -g0 -target bpf
# BTF kept, DWARF removed.
if [ ! -e build/data_sections.stripped.o ] || [ data_sections.c -nt build/data_sections.stripped.o ]; then
    variant data_sections.stripped.o data_sections.c -O2 -g -target bpf
    llvm-strip -g build/data_sections.stripped.o
fi
# Statically linked object: programs/link/linked_{a,b}.c -> programs/build/link/linked_{a,b}.o
# (each with an unresolved extern) -> programs/build/linked.o (bpftool gen object).
mkdir -p build/link
for half in a b; do
    variant "link/linked_$half.o" "link/linked_$half.c" -O2 -g -target bpf
done
if [ ! -e build/linked.o ] || [ build/link/linked_a.o -nt build/linked.o ] || [ build/link/linked_b.o -nt build/linked.o ]; then
    bpftool gen object build/linked.o build/link/linked_a.o build/link/linked_b.o
fi
