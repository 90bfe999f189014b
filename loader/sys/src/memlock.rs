//! `RLIMIT_MEMLOCK` for kernels that charge BPF memory to it.
//!
//! Kernels before memcg accounting of BPF memory (5.11) charge every map, program and
//! BTF object to the creating process's `RLIMIT_MEMLOCK` and refuse a creation over the
//! limit with `EPERM`; the default limit (64 KiB before 5.16) holds only small maps.
//! Later kernels ignore the limit. So the kernel backend answers an `EPERM` from a
//! creating command by raising the limit as far as it may and trying once more: on a
//! kernel that accounts memory to the cgroup the `EPERM` has another cause and comes
//! back unchanged, on one that charges the limit the command now succeeds. The limit
//! stays raised for the process, as libbpf leaves it.
//!
//! # Safety
//! `getrlimit` and `setrlimit` take a resource number and a pointer to a live,
//! exclusively borrowed `rlimit` on the stack.
#![allow(unsafe_code)]

use super::Command;

/// Whether the kernel may charge `command` to `RLIMIT_MEMLOCK`: the commands that
/// allocate kernel memory for a new object.
pub(super) fn charged(command: Command) -> bool {
    matches!(
        command,
        Command::MapCreate | Command::ProgLoad | Command::BtfLoad
    )
}

/// Raises this process's `RLIMIT_MEMLOCK`: to unlimited where the process may (root,
/// `CAP_SYS_RESOURCE`), else the soft limit to the hard one. Whether it went up.
pub(super) fn raise() -> bool {
    let mut now = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: see the module header.
    if unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &raw mut now) } != 0 {
        return false;
    }
    if now.rlim_cur == libc::RLIM_INFINITY {
        return false;
    }
    let unlimited = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: see the module header.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &raw const unlimited) } == 0 {
        return true;
    }
    if now.rlim_cur >= now.rlim_max {
        return false;
    }
    let soft = libc::rlimit {
        rlim_cur: now.rlim_max,
        rlim_max: now.rlim_max,
    };
    // SAFETY: see the module header.
    unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &raw const soft) == 0 }
}
