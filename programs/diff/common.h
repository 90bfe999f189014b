// Shared by the map-diff fixture pairs: programs/diff/NAME.old.c and NAME.new.c are
// built into programs/build/diff/NAME.old.o and NAME.new.o, and `handover diff` of
// each pair is snapshotted under snapshots/.
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

char LICENSE[] SEC("license") = "GPL";
