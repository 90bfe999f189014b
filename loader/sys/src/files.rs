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

/// Where a kernel built with `CONFIG_IKCONFIG_PROC` publishes its configuration,
/// gzip-compressed.
pub const PROC_CONFIG_GZ: &str = "/proc/config.gz";

/// The largest kernel configuration read (a distribution kernel's is about 300 KiB).
pub const MAX_KERNEL_CONFIG: u64 = 16 << 20;

/// Where the kernel gives its release, as `uname -r` prints it.
pub const OSRELEASE: &str = "/proc/sys/kernel/osrelease";

/// The running kernel's release, as `uname -r` prints it (read from [`OSRELEASE`]).
///
/// # Errors
/// The file cannot be read.
pub fn kernel_release() -> io::Result<String> {
    let text = std::fs::read_to_string(OSRELEASE)
        .map_err(|e| io::Error::new(e.kind(), format!("{OSRELEASE}: {e}")))?;
    Ok(text.trim_end().to_owned())
}

/// The running kernel's configuration text and the file it came from, looked for
/// where libbpf looks: `/boot/config-RELEASE`, then [`PROC_CONFIG_GZ`]. `Ok(None)` when
/// neither exists.
///
/// # Errors
/// A file exists but cannot be read or decompressed, or is larger than
/// [`MAX_KERNEL_CONFIG`].
pub fn kernel_config() -> io::Result<Option<(String, String)>> {
    let boot = format!("/boot/config-{}", kernel_release()?);
    for path in [boot.as_str(), PROC_CONFIG_GZ] {
        let file = match std::fs::File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io::Error::new(e.kind(), format!("{path}: {e}"))),
        };
        let text = read_config(file, path.ends_with(".gz"))
            .map_err(|e| io::Error::new(e.kind(), format!("{path}: {e}")))?;
        return Ok(Some((text, path.to_owned())));
    }
    Ok(None)
}

/// Reads at most [`MAX_KERNEL_CONFIG`] bytes of configuration text, gunzipped if
/// `gzip`.
fn read_config(file: impl io::Read, gzip: bool) -> io::Result<String> {
    use io::Read as _;
    let mut reader: Box<dyn io::Read> = if gzip {
        Box::new(flate2::read::GzDecoder::new(file))
    } else {
        Box::new(file)
    };
    let mut text = String::new();
    let n = (&mut reader)
        .take(MAX_KERNEL_CONFIG + 1)
        .read_to_string(&mut text)?;
    if n as u64 > MAX_KERNEL_CONFIG {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("larger than {MAX_KERNEL_CONFIG} bytes"),
        ));
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gzipped_config_reads_as_its_text() {
        use std::io::Write as _;
        let text = "CONFIG_BPF=y\nCONFIG_HZ=250\n";
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(text.as_bytes()).unwrap();
        let bytes = gz.finish().unwrap();
        assert_eq!(read_config(&bytes[..], true).unwrap(), text);
        assert_eq!(read_config(text.as_bytes(), false).unwrap(), text);
        assert!(read_config(&b"not gzip, not a config"[..], true).is_err());
    }

    #[test]
    fn the_running_kernel_has_a_release_and_its_config_sets_bpf() {
        let release = kernel_release().unwrap();
        assert!(
            release.chars().next().is_some_and(|c| c.is_ascii_digit()),
            "{release}"
        );
        // Kernels that run BPF are built with CONFIG_BPF=y; a machine without the
        // configuration published anywhere says so.
        match kernel_config().unwrap() {
            Some((text, from)) => {
                assert!(text.lines().any(|l| l == "CONFIG_BPF=y"), "{from}");
            }
            None => eprintln!("no kernel configuration published on this machine"),
        }
    }
}
