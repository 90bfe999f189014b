//! handover: restart and upgrade eBPF daemons without losing traffic or map state.
//!
//! This crate is the facade: it re-exports the public API of the workspace's crates,
//! so that a daemon depends on one crate.
//!
//! - The pure pipeline ([`handover_plan`]): [`MapModel`] is the serialisable spec of a
//!   map with its key and value layout, [`Snapshot`] keeps those specs on disk,
//!   [`diff_maps`] gives a [`Verdict`] per map with the [`FieldMapping`] of its key and
//!   value, [`convert`] turns old encoded entries into new ones, [`Plan`] is the value
//!   an upgrade executes.
//! - Objects ([`loader`]), the kernel layer ([`sys`]), loading ([`load`]), bpffs
//!   ([`bpffs`]) and the upgrade executor ([`engine`]) are re-exported as modules.
//! - [`decode`] prints map entries by their layouts (`handover dump`).

#![deny(unsafe_code)]
#![deny(missing_docs)]

pub mod btf_file;
pub mod decode;
pub mod inspect;

pub use handover_bpffs as bpffs;
pub use handover_btf as btf;
pub use handover_engine as engine;
pub use handover_load as load;
pub use handover_loader as loader;
pub use handover_plan::*;
pub use handover_sys as sys;
pub use handover_uapi as uapi;

/// The page size and possible CPUs of the running machine, read the way the loader
/// does ([`sys::page_size`], [`sys::Bpf::possible_cpus`]); falls back to the available
/// parallelism when the CPU list cannot be read.
#[must_use]
pub fn kernel_env() -> KernelEnv {
    let possible_cpus = sys::Bpf::kernel()
        .possible_cpus()
        .ok()
        .and_then(|n| u32::try_from(n).ok())
        .or_else(|| {
            std::thread::available_parallelism()
                .ok()
                .and_then(|n| u32::try_from(n.get()).ok())
        })
        .unwrap_or(1);
    KernelEnv {
        page_size: sys::page_size(),
        possible_cpus,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_detected_environment_is_the_loaders() {
        let env = super::kernel_env();
        assert_eq!(env.page_size, super::sys::page_size());
        if let Ok(cpus) = super::sys::Bpf::kernel().possible_cpus() {
            assert_eq!(env.possible_cpus as usize, cpus);
        }
        assert!(env.possible_cpus >= 1);
    }
}
