//! handover: restart and upgrade eBPF daemons without losing traffic or map state.
