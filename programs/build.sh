#!/usr/bin/env bash
# Compiles every programs/*.c into programs/build/NAME.o with clang (-O2 -g -target bpf;
# sources named NAME.bpfeb.c with -target bpfeb).
# Tests name the source of each object they use: programs/NAME.c -> programs/build/NAME.o.
set -euo pipefail
cd "$(dirname "$0")"
mkdir -p build
shopt -s nullglob
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
