//! Pin names and paths, checked before the kernel sees them.
//!
//! bpffs refuses names containing '.' with `EPERM`, so no valid name can be `.` or
//! `..` and none can leave the pin root; '/' separates components of a [`PinPath`].
//! Names ending in one of the reserved suffixes are refused too: those belong to
//! the temporary and rollback pins derived from a target name.

use std::fmt;

use crate::Error;

/// Longest name accepted: leaves room for a reserved suffix within `NAME_MAX` (255).
pub const MAX_NAME: usize = 200;

/// Suffix of the temporary pin a replacement goes through.
pub(crate) const TEMP_SUFFIX: &str = "__handover_tmp";
/// Suffix of the pin that keeps the previous object after an exchange.
pub(crate) const ROLLBACK_SUFFIX: &str = "__handover_prev";

/// A relative path of pin names under a pin root, such as `mesh/maps/endpoints`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PinPath {
    components: Vec<String>,
}

fn check_name(path: &str, name: &str) -> Result<(), Error> {
    let reason = if name.is_empty() {
        Some("empty component")
    } else if name.len() > MAX_NAME {
        Some("component longer than 200 bytes")
    } else if name.contains('.') {
        Some("bpffs refuses names containing '.'")
    } else if name.bytes().any(|b| b == 0 || b.is_ascii_control()) {
        Some("NUL or control character")
    } else if name.ends_with(TEMP_SUFFIX) || name.ends_with(ROLLBACK_SUFFIX) {
        Some("the suffixes __handover_tmp and __handover_prev are reserved")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(Error::InvalidName {
            name: path.to_owned(),
            reason,
        }),
        None => Ok(()),
    }
}

impl PinPath {
    /// Parses `a/b/name`: one or more valid names separated by '/', relative.
    ///
    /// # Errors
    /// [`Error::InvalidName`] naming the path and what is wrong.
    pub fn new(path: &str) -> Result<Self, Error> {
        if path.starts_with('/') {
            return Err(Error::InvalidName {
                name: path.to_owned(),
                reason: "absolute; pin paths are relative to the pin root",
            });
        }
        let components: Vec<String> = path.split('/').map(str::to_owned).collect();
        for c in &components {
            check_name(path, c)?;
        }
        Ok(Self { components })
    }

    /// The directories leading to the pin.
    #[must_use]
    pub fn dirs(&self) -> &[String] {
        self.components.split_last().map_or(&[], |(_, dirs)| dirs)
    }

    /// The pin's own name.
    #[must_use]
    pub fn name(&self) -> &str {
        self.components.last().map_or("", String::as_str)
    }

    pub(crate) fn temp_name(&self) -> String {
        format!("{}{TEMP_SUFFIX}", self.name())
    }

    pub(crate) fn rollback_name(&self) -> String {
        format!("{}{ROLLBACK_SUFFIX}", self.name())
    }

    /// The path of the rollback pin kept by [`PinRoot::exchange`](crate::PinRoot::exchange).
    #[must_use]
    pub fn rollback_path(&self) -> String {
        let mut s = self.to_string();
        s.push_str(ROLLBACK_SUFFIX);
        s
    }
}

impl fmt::Display for PinPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.components.join("/"))
    }
}

impl std::str::FromStr for PinPath {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        Self::new(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_split_into_checked_components() {
        let p = PinPath::new("mesh/maps/endpoints").unwrap();
        assert_eq!(p.dirs(), ["mesh", "maps"]);
        assert_eq!(p.name(), "endpoints");
        assert_eq!(p.to_string(), "mesh/maps/endpoints");
        assert_eq!(p.temp_name(), "endpoints__handover_tmp");
        assert!(!p.temp_name().contains('.'));
    }

    #[test]
    fn names_that_bpffs_or_the_root_would_refuse_are_errors() {
        for bad in [
            "",
            "/abs",
            "a//b",
            ".",
            "..",
            "../x",
            "a/../b",
            "map.v2",
            "a/",
            "x\0y",
            "x__handover_tmp",
            "y__handover_prev",
        ] {
            let e = PinPath::new(bad).unwrap_err();
            assert!(e.to_string().contains("invalid pin path"), "{bad:?}: {e}");
        }
        assert!(PinPath::new(&"a".repeat(201)).is_err());
        assert!(PinPath::new(&"a".repeat(200)).is_ok());
    }
}
