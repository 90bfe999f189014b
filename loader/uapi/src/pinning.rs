//! libbpf's map pinning modes (`__uint(pinning, LIBBPF_PIN_*)` in a map definition).

use serde::{Deserialize, Serialize};

/// How a map is pinned when the object is loaded (`__uint(pinning, ...)`).
///
/// Serialised as libbpf's number (`LIBBPF_PIN_NONE` 0, `LIBBPF_PIN_BY_NAME` 1), as
/// snapshots have always stored it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(try_from = "u32", into = "u32")]
pub enum Pinning {
    /// Not pinned (`LIBBPF_PIN_NONE`).
    #[default]
    None,
    /// Pinned under the map's name in the pin directory (`LIBBPF_PIN_BY_NAME`).
    ByName,
}

impl Pinning {
    /// `none` or `by_name`.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::ByName => "by_name",
        }
    }
}

impl From<Pinning> for u32 {
    fn from(p: Pinning) -> u32 {
        match p {
            Pinning::None => 0,
            Pinning::ByName => 1,
        }
    }
}

impl TryFrom<u32> for Pinning {
    type Error = crate::UnknownValue;
    fn try_from(v: u32) -> Result<Self, Self::Error> {
        match v {
            0 => Ok(Pinning::None),
            1 => Ok(Pinning::ByName),
            value => Err(crate::UnknownValue {
                kind: "pinning mode",
                value,
            }),
        }
    }
}

impl std::fmt::Display for Pinning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}
