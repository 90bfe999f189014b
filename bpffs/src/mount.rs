//! Finding and mounting bpffs instances.

use std::path::{Path, PathBuf};

use crate::Error;
use crate::fsys::{self, BPF_FS_MAGIC};

/// A mounted bpffs instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BpffsMount {
    /// Where it is mounted.
    pub mount_point: PathBuf,
    /// The mount source (usually `bpf` or `none`).
    pub source: String,
}

/// Undoes the octal escapes (`\040` for a space) of `/proc/self/mountinfo` fields.
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'\\'
            && let Some(digits) = bytes.get(i + 1..i + 4)
            && digits.iter().all(|d| (b'0'..=b'7').contains(d))
        {
            let v = digits
                .iter()
                .fold(0u32, |acc, d| acc * 8 + u32::from(d - b'0'));
            if let Ok(v) = u8::try_from(v) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The bpffs mounts listed in a `mountinfo` text: mount point and source of every
/// line whose file system type is `bpf`.
#[must_use]
pub fn parse_mountinfo(text: &str) -> Vec<BpffsMount> {
    text.lines()
        .filter_map(|line| {
            let (head, tail) = line.split_once(" - ")?;
            let mount_point = head.split(' ').nth(4)?;
            let mut tail = tail.split(' ');
            let fstype = tail.next()?;
            let source = tail.next()?;
            (fstype == "bpf").then(|| BpffsMount {
                mount_point: PathBuf::from(unescape(mount_point)),
                source: unescape(source),
            })
        })
        .collect()
}

/// Every bpffs mounted in this mount namespace, each confirmed by its `statfs`
/// magic (`BPF_FS_MAGIC`).
///
/// # Errors
/// `/proc/self/mountinfo` cannot be read.
pub fn find_mounts() -> Result<Vec<BpffsMount>, Error> {
    let path = "/proc/self/mountinfo";
    let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
        op: "read",
        path: path.into(),
        source,
    })?;
    Ok(parse_mountinfo(&text)
        .into_iter()
        .filter(|m| fsys::path_fs_magic(&m.mount_point).is_ok_and(|magic| magic == BPF_FS_MAGIC))
        .collect())
}

/// Whether `path` is on a bpffs.
///
/// # Errors
/// `statfs` fails (the path does not exist).
pub fn is_bpffs(path: &Path) -> Result<bool, Error> {
    fsys::path_fs_magic(path)
        .map(|magic| magic == BPF_FS_MAGIC)
        .map_err(|source| Error::Io {
            op: "statfs",
            path: path.display().to_string(),
            source,
        })
}

/// Mounts a new bpffs instance on the directory `target`, with mode 0700 on its
/// root. Each mount is a fresh, empty instance.
///
/// # Errors
/// `mount(2)` fails (`EPERM` without `CAP_SYS_ADMIN`).
pub fn mount_bpffs(target: &Path) -> Result<(), Error> {
    fsys::mount_bpf(target, 0o700).map_err(|source| Error::Io {
        op: "mount bpffs on",
        path: target.display().to_string(),
        source,
    })
}

/// Unmounts the bpffs at `target` (lazily: pins held open elsewhere survive until
/// closed). Refuses a `target` that is not a bpffs.
///
/// # Errors
/// `target` is not a bpffs, or `umount2(2)` fails.
pub fn unmount_bpffs(target: &Path) -> Result<(), Error> {
    if !is_bpffs(target)? {
        return Err(Error::NotBpffs {
            path: target.display().to_string(),
        });
    }
    fsys::unmount(target).map_err(|source| Error::Io {
        op: "unmount",
        path: target.display().to_string(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_lines_of_type_bpf_are_found_and_unescaped() {
        let text = "\
22 1 0:21 / /sys rw,nosuid shared:7 - sysfs sysfs rw
40 22 0:33 / /sys/fs/bpf rw,nosuid,nodev,noexec,relatime shared:14 - bpf bpf rw,mode=700
41 22 0:34 / /tmp/with\\040space rw,relatime - bpf none rw
42 22 0:35 / /mnt/x rw - ext4 /dev/sda1 rw
";
        let mounts = parse_mountinfo(text);
        assert_eq!(
            mounts,
            [
                BpffsMount {
                    mount_point: "/sys/fs/bpf".into(),
                    source: "bpf".into()
                },
                BpffsMount {
                    mount_point: "/tmp/with space".into(),
                    source: "none".into()
                },
            ]
        );
        assert!(parse_mountinfo("garbage\n\n - \n").is_empty());
    }
}
