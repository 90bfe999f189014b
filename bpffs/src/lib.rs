//! bpffs mounts, pins and atomic pin replacement through directory fds.
