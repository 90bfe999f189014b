//! What the demo's tests need of the kernel: shared by demo/tests/kernel_meshd.rs,
//! demo/tests/kernel_handoff.rs and tests/kernel_demo.rs (each includes `testenv`).

/// Whether this kernel runs the demo dataplane (built with clang's `-mcpu=v3`, whose
/// counters are atomic fetch-adds); if not, says so and `test` is skipped.
pub fn dataplane_loads(test: &str) -> bool {
    handover_sys::Bpf::kernel().has(handover_sys::Feature::AtomicFetch)
        || crate::testenv::kernel_lacks(
            test,
            "atomic fetch-add (BPF_ATOMIC with BPF_FETCH), which the demo dataplane uses",
        )
}
