//! What a daemon hands the engine besides its objects: policy, program types, renames,
//! merge rules and where each program attaches. All of it is part of the identity of
//! a load ([`identity`]).

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::files::hex;
use crate::kernel::ObjectSource;
use crate::upstream::{LayoutHint, MergeRule, ModelOptions, Policy};

/// The program type and expected attach type given for a section whose name does not
/// say them, by their uapi names (`cgroup_sock_addr`, `cgroup_inet4_connect`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProgramTypeOption {
    /// The program type.
    pub prog_type: String,
    /// The expected attach type, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attach_type: Option<String>,
}

/// The inner map template of a map-in-map declared with key and value sizes only:
/// what every map stored in it must look like.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InnerMapOption {
    /// The map type's uapi name (`hash`, `array`).
    pub map_type: String,
    /// Key size in bytes.
    pub key_size: u32,
    /// Value size in bytes.
    pub value_size: u32,
    /// Capacity.
    pub max_entries: u32,
    /// `BPF_F_*` creation flags.
    #[serde(default)]
    pub flags: u32,
}

/// Where a program attaches.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum AttachPoint {
    /// A cgroup hook, through a cgroup link or held by `BPF_PROG_ATTACH`, as `via`
    /// says.
    Cgroup {
        /// The cgroup directory (cgroup v2).
        path: PathBuf,
        /// The attach type's uapi name (`cgroup_inet4_connect`).
        attach_type: String,
        /// How the program is held at the hook (left out of the options' JSON, and
        /// so of the identity, when it is the default, [`Via::Auto`]).
        #[serde(default, skip_serializing_if = "Via::is_auto")]
        via: Via,
    },
    /// XDP on a network device, through an XDP link.
    Xdp {
        /// The device name.
        iface: String,
    },
    /// A tc program (`sched_cls`) on a network device, through a tcx link (6.6+;
    /// the plan refuses it on a kernel without tcx links, probed).
    Tcx {
        /// The device name.
        iface: String,
        /// Ingress or egress.
        direction: TcDirection,
    },
    /// A tracing program (`fentry`, `fexit`, `fmod_ret`, `tp_btf`, `lsm`) at the
    /// target its section names, through a tracing link, which has no program update
    /// (and no detach: it is detached by dropping the link).
    Tracing,
    /// A raw tracepoint program (`raw_tp`) at a tracepoint, through a raw tracepoint
    /// link, which has no program update (and no detach).
    RawTracepoint {
        /// The tracepoint's name (`sys_enter`).
        tracepoint: String,
    },
    /// An `sk_msg` or `sk_skb` program on a sockmap or sockhash of the set, through
    /// a socket map link (6.10) or held by the map (`BPF_PROG_ATTACH` with the map
    /// as target), as `via` says. The map runs one program per attach type and
    /// copies its programs into a socket when the socket is added: a socket keeps
    /// the programs it was added with until it leaves every map, so an upgrade moves
    /// the sockets added after the switch to the new program, and the others stay
    /// with the old one until they close.
    SockMap {
        /// The map's key in the set (`socks`, or `OBJECT/socks` for a private map).
        map: String,
        /// The attach type's uapi name (`sk_msg_verdict`, `sk_skb_stream_verdict`,
        /// `sk_skb_stream_parser`, `sk_skb_verdict`).
        attach_type: String,
        /// The kernel id of the map the hook is on at the moment of a kernel call,
        /// filled in by the executor ([`AttachPoint::on_map`]); never part of the
        /// options or of the identity.
        #[serde(skip)]
        target: Option<u32>,
        /// How the program is held (left out of the options' JSON when it is the
        /// default, [`Via::Auto`]).
        #[serde(default, skip_serializing_if = "Via::is_auto")]
        via: Via,
    },
    /// A kprobe program (`kprobe`, `kretprobe`) at a kernel function, through a
    /// perf-event link (5.15) that holds the probe's perf event (`kprobe` PMU): no
    /// program update and no detach. The plan refuses it on a kernel without the
    /// `kprobe` PMU or perf-event links, probed.
    Kprobe {
        /// The function (a symbol of `/proc/kallsyms`).
        function: String,
        /// A return probe (`kretprobe`): the program runs as the function returns.
        #[serde(default)]
        retprobe: bool,
    },
    /// A kprobe program (`uprobe`, `uretprobe`) at an instruction of an executable or
    /// library, in every process that maps it, through a perf-event link that holds
    /// the probe's perf event (`uprobe` PMU), as for [`AttachPoint::Kprobe`].
    Uprobe {
        /// The file (absolute).
        path: PathBuf,
        /// A symbol of the file's symbol table (`.symtab` or `.dynsym`); without it
        /// `offset` is a file offset.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        symbol: Option<String>,
        /// Bytes past the symbol, or the file offset when no symbol is given.
        #[serde(default)]
        offset: u64,
        /// A return probe (`uretprobe`).
        #[serde(default)]
        retprobe: bool,
    },
}

/// How a cgroup or socket map attachment is held, as the options ask.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum Via {
    /// A link (`BPF_LINK_CREATE`: cgroup links from 5.7, socket map links from
    /// 6.10), pinned.
    Link,
    /// `BPF_PROG_ATTACH` (at a cgroup with `BPF_F_ALLOW_MULTI`): no link; the cgroup
    /// or the map holds the program, and the engine's state records it.
    ProgAttach,
    /// A link where the kernel has links for the hook (probed with a link on a
    /// throwaway cgroup or sockhash), else `BPF_PROG_ATTACH`.
    #[default]
    Auto,
}

impl Via {
    /// Whether it is [`Via::Auto`].
    #[must_use]
    pub fn is_auto(&self) -> bool {
        *self == Via::Auto
    }
}

impl std::str::FromStr for Via {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "link" => Ok(Via::Link),
            "prog-attach" => Ok(Via::ProgAttach),
            "auto" => Ok(Via::Auto),
            _ => Err(format!(
                "{s:?} is not a way to hold a cgroup attachment: link, prog-attach or auto"
            )),
        }
    }
}

/// How an attachment is held in the kernel, once [`Via::Auto`] is decided.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Hold {
    /// By a link, pinned under `links/`.
    #[default]
    Link,
    /// By the cgroup itself (`BPF_PROG_ATTACH`); recorded in the state, verified
    /// with `BPF_PROG_QUERY`.
    ProgAttach,
}

impl fmt::Display for Hold {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Hold::Link => "link",
            Hold::ProgAttach => "prog attach",
        })
    }
}

/// The direction of a tc hook.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TcDirection {
    /// Packets the device receives.
    Ingress,
    /// Packets the device sends.
    Egress,
}

impl TcDirection {
    /// The tcx attach type of the direction.
    #[must_use]
    pub const fn attach_type(self) -> handover_sys::AttachType {
        match self {
            TcDirection::Ingress => handover_sys::AttachType::TcxIngress,
            TcDirection::Egress => handover_sys::AttachType::TcxEgress,
        }
    }
}

/// How an attachment is moved from the old program to the new one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SwitchMethod {
    /// `BPF_LINK_UPDATE` with `BPF_F_REPLACE` and the old program: atomic, and it
    /// fails without effect if the link runs another program.
    LinkUpdate,
    /// `BPF_PROG_ATTACH` with `BPF_F_ALLOW_MULTI | BPF_F_REPLACE` and the old program
    /// as `replace_bpf_fd`: the new program takes the old one's place in the
    /// cgroup's list atomically, and the kernel refuses without effect if the old
    /// program is not attached there.
    ProgAttachReplace,
    /// The link type has no update: a link of the new program is created first, then
    /// the old link is detached (or, for link types the kernel cannot detach, unpinned
    /// and closed, which frees it), so both run for a moment and the hook is never
    /// empty.
    AttachThenDetach,
    /// `BPF_PROG_ATTACH` of the new program to the socket map, which exchanges the
    /// map's program in one step; the kernel has no compare-and-swap there, so the
    /// old program is checked with `BPF_PROG_QUERY` first where the kernel answers
    /// it for socket maps (5.19+). Sockets already in the map keep the old program
    /// until they close.
    MapProgAttach,
}

impl fmt::Display for SwitchMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SwitchMethod::LinkUpdate => "link update (compare-and-swap)",
            SwitchMethod::ProgAttachReplace => "prog attach replace (compare-and-swap)",
            SwitchMethod::AttachThenDetach => "attach new, then detach old",
            SwitchMethod::MapProgAttach => {
                "prog attach over the map's program (checked by query; sockets already \
                 in the map keep the old program until they close)"
            }
        })
    }
}

impl AttachPoint {
    /// How an upgrade switches an attachment here, held as `hold` says.
    #[must_use]
    pub fn switch_method(&self, hold: Hold) -> SwitchMethod {
        match (self, hold) {
            (AttachPoint::Cgroup { .. }, Hold::ProgAttach) => SwitchMethod::ProgAttachReplace,
            (AttachPoint::SockMap { .. }, Hold::ProgAttach) => SwitchMethod::MapProgAttach,
            (
                AttachPoint::Cgroup { .. }
                | AttachPoint::Xdp { .. }
                | AttachPoint::Tcx { .. }
                | AttachPoint::SockMap { .. },
                _,
            ) => SwitchMethod::LinkUpdate,
            (
                AttachPoint::Tracing
                | AttachPoint::RawTracepoint { .. }
                | AttachPoint::Kprobe { .. }
                | AttachPoint::Uprobe { .. },
                _,
            ) => SwitchMethod::AttachThenDetach,
        }
    }

    /// Whether `other` is the same hook, however it is held.
    #[must_use]
    pub fn same_hook(&self, other: &AttachPoint) -> bool {
        match (self, other) {
            (
                AttachPoint::Cgroup {
                    path, attach_type, ..
                },
                AttachPoint::Cgroup {
                    path: p,
                    attach_type: t,
                    ..
                },
            ) => path == p && attach_type == t,
            (
                AttachPoint::SockMap {
                    map, attach_type, ..
                },
                AttachPoint::SockMap {
                    map: m,
                    attach_type: t,
                    ..
                },
            ) => map == m && attach_type == t,
            _ => self == other,
        }
    }

    /// The way the options ask the attachment to be held: `None` when the kernel
    /// decides (a cgroup hook with [`Via::Auto`]).
    #[must_use]
    pub fn asked_hold(&self) -> Option<Hold> {
        match self {
            AttachPoint::Cgroup { via, .. } | AttachPoint::SockMap { via, .. } => match via {
                Via::Link => Some(Hold::Link),
                Via::ProgAttach => Some(Hold::ProgAttach),
                Via::Auto => None,
            },
            _ => Some(Hold::Link),
        }
    }

    /// The set's map a [`AttachPoint::SockMap`] hook is on (its key).
    #[must_use]
    pub fn map(&self) -> Option<&str> {
        match self {
            AttachPoint::SockMap { map, .. } => Some(map),
            _ => None,
        }
    }

    /// The point with the kernel id of the map its hook is on, as `id` answers for
    /// the map's key: what the executor hands the kernel. Other points are returned
    /// as they are.
    #[must_use]
    pub fn on_map(&self, id: impl FnOnce(&str) -> Option<u32>) -> std::borrow::Cow<'_, Self> {
        match self {
            AttachPoint::SockMap {
                map,
                attach_type,
                via,
                ..
            } => std::borrow::Cow::Owned(AttachPoint::SockMap {
                map: map.clone(),
                attach_type: attach_type.clone(),
                target: id(map),
                via: *via,
            }),
            _ => std::borrow::Cow::Borrowed(self),
        }
    }
}

impl fmt::Display for AttachPoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AttachPoint::Cgroup {
                path, attach_type, ..
            } => {
                write!(f, "cgroup {} ({attach_type})", path.display())
            }
            AttachPoint::Xdp { iface } => write!(f, "xdp on {iface}"),
            AttachPoint::Tcx { iface, direction } => {
                let d = match direction {
                    TcDirection::Ingress => "ingress",
                    TcDirection::Egress => "egress",
                };
                write!(f, "tcx {d} on {iface}")
            }
            AttachPoint::Tracing => f.write_str("tracing target of the program's section"),
            AttachPoint::RawTracepoint { tracepoint } => {
                write!(f, "raw tracepoint {tracepoint}")
            }
            AttachPoint::SockMap {
                map,
                attach_type,
                target,
                ..
            } => {
                write!(f, "socket map {map} ({attach_type})")?;
                match target {
                    Some(id) => write!(f, " on map {id}"),
                    None => Ok(()),
                }
            }
            AttachPoint::Kprobe { function, retprobe } => {
                let kind = if *retprobe { "kretprobe" } else { "kprobe" };
                write!(f, "{kind} {function}")
            }
            AttachPoint::Uprobe {
                path,
                symbol,
                offset,
                retprobe,
            } => {
                let kind = if *retprobe { "uretprobe" } else { "uprobe" };
                write!(f, "{kind} {}:", path.display())?;
                match (symbol, offset) {
                    (Some(s), 0) => f.write_str(s),
                    (Some(s), o) => write!(f, "{s}+{o:#x}"),
                    (None, o) => write!(f, "{o:#x}"),
                }
            }
        }
    }
}

/// One attachment of a program of the set.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Attachment {
    /// Its name: the link is pinned under it (`links/NAME`).
    pub name: String,
    /// The program's name.
    pub program: String,
    /// Where it attaches.
    pub point: AttachPoint,
}

/// Everything besides the objects that goes into a load.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Options {
    /// How far the upgrade goes to keep entries.
    #[serde(default)]
    pub policy: Policy,
    /// Program types for sections whose names do not say them, by rule: a section
    /// name, `PREFIX*` for every section starting with `PREFIX`, or `*` for every
    /// program without a more specific rule (the loader's `ProgramTypes`).
    #[serde(default)]
    pub program_types: BTreeMap<String, ProgramTypeOption>,
    /// Inner map templates of map-in-maps declared with sizes only, by outer map name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub inner_maps: BTreeMap<String, InnerMapOption>,
    /// Declared map renames: new map key to the old map key it continues.
    #[serde(default)]
    pub renames: BTreeMap<String, String>,
    /// Merge rules by `map.field` (`backends.stats.hits`), for the reconcile of fields
    /// both versions changed; a rule here wins over the `handover:merge:` tag of the
    /// field in the new object.
    #[serde(default)]
    pub merge_rules: BTreeMap<String, MergeRule>,
    /// Where the programs attach.
    #[serde(default)]
    pub attachments: Vec<Attachment>,
    /// Key and value layouts of maps declared with sizes only, by map name (as
    /// `--layout MAP=key:STRUCT,value:STRUCT` says them); they win over a tag in the
    /// object. Left out of the encoding when empty, so that identities computed
    /// before the field existed stay the same.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub layouts: BTreeMap<String, LayoutOption>,
    /// Tombstone maps of the new set by the carried map they serve (`conns` →
    /// `conns_tombstones`): the new programs write every key they delete from the
    /// carried map into its tombstone map (see the reconcile's contract), which makes
    /// the reconcile exact for entries the old programs created late.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tombstones: BTreeMap<String, String>,
    /// Bounds of the delta passes before the switch (left out of the options' JSON,
    /// and so of the identity, when they are the defaults).
    #[serde(default, skip_serializing_if = "DeltaBounds::is_default")]
    pub delta: DeltaBounds,
}

/// The layout of a size-only map's key and value: names of types of the object's BTF.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayoutOption {
    /// The key's type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// The value's type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
}

impl Options {
    /// The layouts as the model takes them.
    #[must_use]
    pub fn model_options(&self) -> ModelOptions {
        ModelOptions {
            layouts: self
                .layouts
                .iter()
                .map(|(map, l)| LayoutHint {
                    map: map.clone(),
                    key: l.key.clone(),
                    value: l.value.clone(),
                })
                .collect(),
        }
    }
}

/// How many delta passes run while the old programs still write, and for how long:
/// passes repeat until one carries at most `settle_at` entries, `max_passes` ran or
/// `max_time_ms` passed; one more pass of every map follows right before the switch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeltaBounds {
    /// At most this many passes per map (the final one not counted).
    pub max_passes: u32,
    /// No pass starts after this many milliseconds.
    pub max_time_ms: u64,
    /// A pass carrying at most this many entries ends the passes.
    pub settle_at: u64,
}

impl Default for DeltaBounds {
    fn default() -> Self {
        Self {
            max_passes: 8,
            max_time_ms: 10_000,
            settle_at: 64,
        }
    }
}

impl DeltaBounds {
    fn is_default(&self) -> bool {
        *self == Self::default()
    }

    /// The data path's limits.
    pub(crate) fn limits(&self) -> crate::migrate::DeltaLimits {
        crate::migrate::DeltaLimits {
            max_passes: self.max_passes as usize,
            max_time: std::time::Duration::from_millis(self.max_time_ms),
            settle_at: usize::try_from(self.settle_at).unwrap_or(usize::MAX),
        }
    }
}

impl Options {
    /// The program type rules as the loader takes them.
    ///
    /// # Errors
    /// A rule names an unknown program or attach type.
    pub fn loader_program_types(&self) -> Result<handover_loader::ProgramTypes, String> {
        self.program_types.iter().try_fold(
            handover_loader::ProgramTypes::new(),
            |types, (section, t)| {
                let spec = match &t.attach_type {
                    Some(a) => format!("{section}={}:{a}", t.prog_type),
                    None => format!("{section}={}", t.prog_type),
                };
                types
                    .rule(&spec)
                    .map_err(|e| format!("program type of {section}: {e}"))
            },
        )
    }

    /// The inner map templates as the loader takes them.
    ///
    /// # Errors
    /// A template names an unknown map type.
    pub fn loader_inner_maps(
        &self,
    ) -> Result<std::collections::HashMap<String, handover_loader::MapSpec>, String> {
        self.inner_maps
            .iter()
            .map(|(outer, t)| {
                let map_type = t
                    .map_type
                    .parse()
                    .map_err(|e| format!("inner map of {outer}: {e}"))?;
                let mut spec = handover_loader::MapSpec::new(
                    &format!("{outer}.inner"),
                    map_type,
                    t.key_size,
                    t.value_size,
                    t.max_entries,
                );
                spec.flags = t.flags;
                Ok((outer.clone(), spec))
            })
            .collect()
    }
}

/// The identity of a load: SHA-256 over every object's name and bytes and the
/// canonical JSON of the options (maps are ordered, so equal options encode equally).
#[must_use]
pub fn identity(objects: &[ObjectSource], options: &Options) -> String {
    let mut h = Sha256::new();
    h.update(b"handover-identity-1\0");
    for o in objects {
        h.update((o.name.len() as u64).to_le_bytes());
        h.update(o.name.as_bytes());
        h.update((o.bytes.len() as u64).to_le_bytes());
        h.update(&o.bytes);
    }
    // Serialising a struct of strings, maps and enums cannot fail.
    let canonical = serde_json::to_vec(options).unwrap_or_default();
    h.update((canonical.len() as u64).to_le_bytes());
    h.update(&canonical);
    hex(&h.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_identity_covers_every_byte_and_every_option() {
        let objs = vec![ObjectSource::new("a.o", vec![1, 2, 3])];
        let base = identity(&objs, &Options::default());
        assert_eq!(base, identity(&objs, &Options::default()));
        assert_ne!(
            base,
            identity(
                &[ObjectSource::new("a.o", vec![1, 2, 4])],
                &Options::default()
            )
        );
        assert_ne!(
            base,
            identity(
                &[ObjectSource::new("b.o", vec![1, 2, 3])],
                &Options::default()
            )
        );
        let strict = Options {
            policy: Policy::Strict,
            ..Options::default()
        };
        assert_ne!(base, identity(&objs, &strict));
        let attached = Options {
            attachments: vec![Attachment {
                name: "c".into(),
                program: "p".into(),
                point: AttachPoint::Xdp { iface: "lo".into() },
            }],
            ..Options::default()
        };
        assert_ne!(base, identity(&objs, &attached));
        let hinted = Options {
            layouts: BTreeMap::from([(
                "m".to_owned(),
                LayoutOption {
                    key: None,
                    value: Some("v".into()),
                },
            )]),
            ..Options::default()
        };
        assert_ne!(base, identity(&objs, &hinted));
        let typed = Options {
            program_types: BTreeMap::from([(
                "custom*".to_owned(),
                ProgramTypeOption {
                    prog_type: "xdp".into(),
                    attach_type: None,
                },
            )]),
            ..Options::default()
        };
        assert_ne!(base, identity(&objs, &typed));
        let templated = Options {
            inner_maps: BTreeMap::from([(
                "outer".to_owned(),
                InnerMapOption {
                    map_type: "hash".into(),
                    key_size: 4,
                    value_size: 8,
                    max_entries: 16,
                    flags: 0,
                },
            )]),
            ..Options::default()
        };
        assert_ne!(base, identity(&objs, &templated));
        // Object boundaries count: [ab][c] is not [a][bc].
        assert_ne!(
            identity(
                &[
                    ObjectSource::new("x", vec![1, 2]),
                    ObjectSource::new("y", vec![3])
                ],
                &Options::default()
            ),
            identity(
                &[
                    ObjectSource::new("x", vec![1]),
                    ObjectSource::new("y", vec![2, 3])
                ],
                &Options::default()
            )
        );
    }
}
