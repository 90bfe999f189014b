// Shared by the mesh dataplane versions: programs/dataplane/vN.c is built into
// programs/build/dataplane/vN.o by programs/build.sh and driven by the meshd daemon
// (demo/). Each version declares its own maps and structs, as separately released
// versions of a real dataplane do; only includes, constants and the upgrade tags live
// here.
//
// Upgrade tags. A field (or a map variable) may carry BTF declaration tags that tell
// handover how to carry it across an upgrade. Every tag is a string
// "handover:RULE[:ARG]" attached with __attribute__((btf_decl_tag(...))):
//
//   handover:renamed_from:OLD   this field is the field OLD of the previous version,
//                               renamed: its value is carried, not zero-filled.
//   handover:merge:RULE         how the final reconcile merges a field that both the
//                               old and the new programs changed during an upgrade:
//                               new (default), sum (add both sides' deltas: counters),
//                               max (timestamps).
//   handover:default:VALUE      the value (decimal) a field added by this version
//                               takes in carried entries, instead of zero.
//
// The macros below spell them; a tag is ignored by the kernel and by the verifier.
#ifndef MESH_DATAPLANE_H
#define MESH_DATAPLANE_H

#include <linux/bpf.h>
#include <linux/in.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#define HANDOVER_RENAMED_FROM(old) __attribute__((btf_decl_tag("handover:renamed_from:" #old)))
#define HANDOVER_MERGE(rule) __attribute__((btf_decl_tag("handover:merge:" #rule)))
#define HANDOVER_DEFAULT(value) __attribute__((btf_decl_tag("handover:default:" #value)))

// Priority levels of a service's endpoints: level 0 is used while it has endpoints,
// then level 1, and so on (failover, as Kmesh's locality priorities).
#define PRIO_COUNT 4

// Load-balancing policies: the index of the policy program in lb_policies.
#define LB_RANDOM 0
#define LB_ROUND_ROBIN 1
#define LB_WEIGHTED 2 // from version 2

#ifndef SOCK_STREAM
#define SOCK_STREAM 1
#endif

// TCP_CLOSE as the sockops state callback reports it (enum in linux/bpf.h).
#define MESH_TCP_CLOSE BPF_TCP_CLOSE

#endif
