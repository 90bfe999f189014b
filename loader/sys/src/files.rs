//! The kernel's files that handover reads: its BTF and its symbol table. Pure code
//! takes their contents as arguments; this is where they are read.

use std::io;

/// Where the kernel publishes its own BTF.
pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

/// Where the kernel lists its symbols' addresses.
pub const KALLSYMS: &str = "/proc/kallsyms";

/// The running kernel's BTF ([`VMLINUX_BTF`]).
///
/// # Errors
/// The file cannot be read (a kernel built without `CONFIG_DEBUG_INFO_BTF`).
pub fn vmlinux_btf() -> io::Result<Vec<u8>> {
    std::fs::read(VMLINUX_BTF)
}

/// The BTF of kernel module `module` (`/sys/kernel/btf/MODULE`), split BTF over
/// [`vmlinux_btf`].
///
/// # Errors
/// The module has no BTF or the file cannot be read.
pub fn module_btf(module: &str) -> io::Result<Vec<u8>> {
    if module.is_empty() || module.contains('/') || module == "." || module == ".." {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{module:?} is not a kernel module name"),
        ));
    }
    std::fs::read(format!("/sys/kernel/btf/{module}"))
}

/// The text of [`KALLSYMS`].
///
/// # Errors
/// The file cannot be read.
pub fn kallsyms() -> io::Result<String> {
    std::fs::read_to_string(KALLSYMS)
}
