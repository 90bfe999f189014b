//! The [`Plan`]: what an install, restart or upgrade will do, computed without
//! changing anything, as a value to print, store and review before it runs.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::carry::{self, Carry};
use crate::error::Error;
use crate::files::sha256_hex;
use crate::kernel::{KernelFacts, ObjectSource};
use crate::options::{AttachPoint, Hold, Options, SwitchMethod, identity};
use crate::state::{ObjectRecord, State};
use crate::upstream::{
    ConversionPlan, FieldMapping, KernelEnv, MapModel, Side, Verdict, diff_maps, object_model_with,
};

/// How this start relates to what is installed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Start {
    /// Nothing of ours is installed (or what the state records is gone: `stale` says
    /// why, e.g. bpffs was wiped by a reboot).
    Fresh {
        /// Why a recorded state was not used.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        stale: Option<String>,
    },
    /// The same identity is installed: pins are reopened, nothing is loaded.
    Restart,
    /// Another identity is installed: its maps are carried into the new set.
    Upgrade {
        /// The installed identity.
        from: String,
    },
    /// An upgrade was interrupted: applying this plan recovers it.
    Interrupted {
        /// The interrupted transaction.
        tx: String,
    },
}

/// What happens to one map.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MapAction {
    /// Created empty (fresh install, a new map, a program array, read-only data, or a
    /// `recreate`).
    Create,
    /// The live map is kept.
    Reuse,
    /// A replacement is created and every entry carried over (converted as planned).
    Copy,
    /// Only in the old set: unpinned at the end.
    Remove,
}

impl MapAction {
    fn as_str(self) -> &'static str {
        match self {
            MapAction::Create => "create",
            MapAction::Reuse => "reuse",
            MapAction::Copy => "copy",
            MapAction::Remove => "remove",
        }
    }
}

/// One map of the plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MapPlan {
    /// The map's key in the set ([`map_key`]).
    pub key: String,
    /// The object that defines it and its name there (`None` for a removed map).
    pub source: Option<(String, String)>,
    /// Where it is pinned.
    pub pin: String,
    /// What happens.
    pub action: MapAction,
    /// The diff's verdict (`None` on a fresh install).
    pub verdict: Option<Verdict>,
    /// Whether entries held by the live map are lost.
    pub loses_entries: bool,
    /// The new capacity.
    pub max_entries: u32,
    /// The old map's key, when it is carried from a map of another name (a rename).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// Conversion of each old key, when keys change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_plan: Option<ConversionPlan>,
    /// Conversion of each old value, when values change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_plan: Option<ConversionPlan>,
    /// Per field of the key and value, what the conversion does.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<FieldMapping>,
    /// Why, in words.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    /// How its entries get into the new set.
    pub carry: Carry,
}

/// What happens to one program.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProgramAction {
    /// Loaded and verified against the new map set.
    Load,
    /// The pinned program is reopened.
    Reopen,
    /// Only in the old set: unpinned at the end.
    Remove,
}

/// One program of the plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProgramPlan {
    /// Its name.
    pub name: String,
    /// Where it is pinned.
    pub pin: String,
    /// What happens.
    pub action: ProgramAction,
}

/// What happens to one attachment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "method")]
pub enum AttachAction {
    /// A new link, pinned.
    Attach,
    /// The live link moves to the new program, by the method given.
    Switch(SwitchMethod),
    /// Checked to be live; re-attached if it is not.
    Verify,
    /// Only in the old set: detached and unpinned at the end.
    Detach,
}

/// One attachment of the plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttachPlan {
    /// Its name.
    pub name: String,
    /// The program.
    pub program: String,
    /// Where.
    pub point: AttachPoint,
    /// Where its link is pinned (empty for an attachment without a link).
    pub pin: String,
    /// How it is held: by a pinned link, or by the cgroup (`BPF_PROG_ATTACH`).
    #[serde(default)]
    pub hold: Hold,
    /// What happens.
    pub action: AttachAction,
}

/// The live objects a plan was computed against: pins with the ids found there, and
/// the program each pinned link ran. `apply` refuses a plan when these changed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LiveState {
    /// Pin path to object id.
    pub pins: BTreeMap<String, u32>,
    /// Link pin path to the id of the program it runs (0: detached).
    pub links: BTreeMap<String, u32>,
    /// Attachments held by their cgroup without a link, by name: the recorded
    /// program's id while `BPF_PROG_QUERY` lists it at the hook (0: not attached).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub attached: BTreeMap<String, u32>,
}

/// What an install, restart or upgrade does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    /// The identity of the new load.
    pub identity: String,
    /// How this start relates to what is installed.
    pub start: Start,
    /// The objects of the new set.
    pub objects: Vec<ObjectRecord>,
    /// The options of the new set.
    pub options: Options,
    /// The live state it was computed against.
    pub live: LiveState,
    /// Every map: the new set's, then removed ones.
    pub maps: Vec<MapPlan>,
    /// Every program.
    pub programs: Vec<ProgramPlan>,
    /// Every attachment.
    pub attachments: Vec<AttachPlan>,
    /// The new set's map specs (the snapshot written at commit).
    pub models: Vec<MapModel>,
}

impl Plan {
    /// Maps whose live entries are lost.
    #[must_use]
    pub fn lost_maps(&self) -> Vec<String> {
        self.maps
            .iter()
            .filter(|m| m.loses_entries)
            .map(|m| m.key.clone())
            .collect()
    }

    /// The map of key `key`.
    #[must_use]
    pub fn map(&self, key: &str) -> Option<&MapPlan> {
        self.maps.iter().find(|m| m.key == key)
    }
}

/// The key of a map in a set: its name, except for global data sections (`.data`,
/// `.rodata`, `.bss`...), which every object has its own of: `SECTION:OBJECT`. The
/// section comes first because the diff tells read-only data by the start of the
/// name, even in the kernel's 15-byte form of it.
#[must_use]
pub fn map_key(object: &str, name: &str) -> String {
    if name.starts_with('.') {
        format!("{name}:{object}")
    } else {
        name.to_owned()
    }
}

/// A name as a bpffs pin name: bpffs refuses '.', which object and section names
/// have; '~' takes its place (no C identifier or section name holds one).
#[must_use]
pub fn pin_name(name: &str) -> String {
    name.replace('.', "~")
}

pub(crate) fn map_pin(key: &str) -> String {
    format!("maps/{}", pin_name(key))
}
pub(crate) fn prog_pin(name: &str) -> String {
    format!("progs/{}", pin_name(name))
}
pub(crate) fn link_pin(name: &str) -> String {
    format!("links/{}", pin_name(name))
}
/// The temporary pin of a staged object, outside the live directories.
pub(crate) fn staged_pin(live: &str) -> String {
    format!("stage/{live}")
}

/// The maps and programs of an object set, by key and name.
#[derive(Debug, Clone, Default)]
pub(crate) struct SetModel {
    /// Map models with the key as name, in first-definition order.
    pub(crate) maps: Vec<MapModel>,
    /// Key to (object, name in the object).
    pub(crate) sources: BTreeMap<String, (String, String)>,
    /// Program names.
    pub(crate) programs: BTreeSet<String>,
}

/// Models every map of the set; a map several objects share (same name) must be
/// defined alike by each.
pub(crate) fn set_model(objects: &[ObjectSource], options: &Options) -> Result<SetModel, Error> {
    let model_options = options.model_options();
    let mut set = SetModel::default();
    let mut names = BTreeSet::new();
    for o in objects {
        if !names.insert(o.name.as_str()) {
            return Err(Error::Object {
                object: o.name.clone(),
                reason: "two objects of the set have this name".into(),
            });
        }
        let model =
            object_model_with(&o.name, &o.bytes, &model_options).map_err(|e| Error::Object {
                object: o.name.clone(),
                reason: e.to_string(),
            })?;
        for mut m in model.maps {
            let key = map_key(&o.name, &m.name);
            let name = std::mem::replace(&mut m.name, key.clone());
            if let Some(prev) = set.maps.iter().find(|p| p.name == key) {
                if *prev != m {
                    let first = set
                        .sources
                        .get(&key)
                        .map(|s| s.0.clone())
                        .unwrap_or_default();
                    return Err(Error::Object {
                        object: o.name.clone(),
                        reason: format!(
                            "map {key} is defined differently here than in {first}; \
                             objects share a map by name only when they define it alike"
                        ),
                    });
                }
                continue;
            }
            set.sources.insert(key, (o.name.clone(), name));
            set.maps.push(m);
        }
        let parsed = handover_loader::Object::parse(&o.bytes).map_err(|e| Error::Object {
            object: o.name.clone(),
            reason: e.to_string(),
        })?;
        for p in parsed.programs() {
            if !set.programs.insert(p.name.clone()) {
                return Err(Error::Object {
                    object: o.name.clone(),
                    reason: format!("program {} is defined by two objects of the set", p.name),
                });
            }
        }
    }
    Ok(set)
}

pub(crate) fn records(objects: &[ObjectSource]) -> Vec<ObjectRecord> {
    objects
        .iter()
        .map(|o| ObjectRecord {
            name: o.name.clone(),
            sha256: sha256_hex(&o.bytes),
            size: o.bytes.len(),
        })
        .collect()
}

fn check_options(set: &SetModel, options: &Options) -> Result<(), Error> {
    let mut names = BTreeSet::new();
    for a in &options.attachments {
        if !names.insert(&a.name) {
            return Err(Error::Options(format!(
                "attachment {} is named twice",
                a.name
            )));
        }
        if !set.programs.contains(&a.program) {
            return Err(Error::Options(format!(
                "attachment {} names program {}, which no object of the set has",
                a.name, a.program
            )));
        }
        if let AttachPoint::SockMap {
            map, attach_type, ..
        } = &a.point
        {
            check_sock_map(set, &a.name, map, attach_type)?;
        }
    }
    for map in options.layouts.keys() {
        if !set.sources.values().any(|(_, name)| name == map) {
            return Err(Error::Options(format!(
                "a layout is given for map {map}, which no object of the set has"
            )));
        }
    }
    for new in options.renames.keys() {
        if !set.sources.contains_key(new) {
            return Err(Error::Options(format!(
                "rename to map {new}, which no object of the set has"
            )));
        }
    }
    for (map, tombstones) in &options.tombstones {
        for m in [map, tombstones] {
            if !set.sources.contains_key(m) {
                return Err(Error::Options(format!(
                    "tombstones {tombstones} for map {map}: no object of the set has map {m}"
                )));
            }
        }
        if map == tombstones {
            return Err(Error::Options(format!(
                "map {map} cannot be its own tombstone map"
            )));
        }
    }
    Ok(())
}

/// A socket map hook names a sockmap or sockhash of the set and an attach type a
/// socket map holds a program for.
fn check_sock_map(set: &SetModel, name: &str, map: &str, attach_type: &str) -> Result<(), Error> {
    use handover_sys::{AttachType, MapType};
    let Some(m) = set.maps.iter().find(|m| m.name == map) else {
        return Err(Error::Options(format!(
            "attachment {name} is on map {map}, which no object of the set has"
        )));
    };
    if !matches!(m.map_type, MapType::Sockmap | MapType::Sockhash) {
        return Err(Error::Options(format!(
            "attachment {name} is on map {map}, a {} map: programs attach to sockmaps \
             and sockhashes only",
            m.map_type
        )));
    }
    match attach_type.parse::<AttachType>() {
        Ok(
            AttachType::SkMsgVerdict
            | AttachType::SkSkbStreamParser
            | AttachType::SkSkbStreamVerdict
            | AttachType::SkSkbVerdict,
        ) => Ok(()),
        _ => Err(Error::Options(format!(
            "attachment {name} on map {map}: {attach_type:?} is not an attach type of a \
             socket map (sk_msg_verdict, sk_skb_stream_parser, sk_skb_stream_verdict, \
             sk_skb_verdict)"
        ))),
    }
}

/// What is wrong with a kprobe or uprobe attach point as the options give it.
fn probe_point_error(point: &AttachPoint) -> Option<String> {
    match point {
        AttachPoint::Kprobe { function, .. } if function.is_empty() => {
            Some("a kprobe needs the name of a kernel function".to_owned())
        }
        AttachPoint::Uprobe { path, .. } if !path.is_absolute() => Some(format!(
            "the uprobe's file {} is not an absolute path",
            path.display()
        )),
        AttachPoint::Uprobe {
            symbol: Some(s), ..
        } if s.is_empty() => {
            Some("the uprobe's symbol is empty (leave it out to probe a file offset)".to_owned())
        }
        _ => None,
    }
}

/// Why this kernel cannot hold a kprobe or uprobe attachment at `point` past the
/// daemon's exit, if it cannot (`None` for other attach points).
fn probe_refusal(point: &AttachPoint, facts: &KernelFacts) -> Option<String> {
    let (pmu, present, config) = match point {
        AttachPoint::Kprobe { .. } => ("kprobe", facts.kprobes, "CONFIG_KPROBE_EVENTS"),
        AttachPoint::Uprobe { .. } => ("uprobe", facts.uprobes, "CONFIG_UPROBE_EVENTS"),
        _ => return None,
    };
    if !present {
        return Some(format!(
            "this kernel has no {pmu} PMU (/sys/bus/event_source/devices/{pmu} is missing: \
             a kernel built without {config})"
        ));
    }
    if !facts.perf_links {
        return Some(format!(
            "this kernel has no perf-event links (the probe of BPF_LINK_CREATE with \
             BPF_PERF_EVENT failed; they came with 5.15), and a {pmu} attached without a \
             link (PERF_EVENT_IOC_SET_BPF) ends with the daemon's descriptor"
        ));
    }
    None
}

/// Inputs of [`compute`].
pub(crate) struct PlanInput<'a> {
    pub(crate) objects: &'a [ObjectSource],
    pub(crate) options: &'a Options,
    /// The installed state, if it is trusted and not stale.
    pub(crate) state: Option<&'a State>,
    /// Why a recorded state is not used.
    pub(crate) stale: Option<String>,
    pub(crate) live: LiveState,
    pub(crate) facts: KernelFacts,
    /// How each attachment of the options is held, by name, with
    /// [`Via::Auto`](crate::Via::Auto) decided by the kernel's probe.
    pub(crate) holds: BTreeMap<String, Hold>,
}

/// Computes the plan of loading `objects` with `options` over `state`.
pub(crate) fn compute(input: PlanInput<'_>) -> Result<Plan, Error> {
    let PlanInput {
        objects,
        options,
        state,
        stale,
        live,
        facts,
        holds,
    } = input;
    let set = set_model(objects, options)?;
    check_options(&set, options)?;
    // Hooks this kernel cannot switch are refused here, before anything runs.
    for a in &options.attachments {
        if matches!(a.point, AttachPoint::Tcx { .. }) && !facts.tcx_links {
            return Err(Error::Options(format!(
                "attachment {} at {}: this kernel has no tcx links (the probe of \
                 BPF_TCX_INGRESS failed; they came with 6.6), and attaching tc programs \
                 through netlink is not supported",
                a.name, a.point
            )));
        }
        if let Some(why) = probe_point_error(&a.point).or_else(|| probe_refusal(&a.point, &facts)) {
            return Err(Error::Options(format!(
                "attachment {} at {}: {why}",
                a.name, a.point
            )));
        }
    }
    let identity = identity(objects, options);
    let start = match state {
        None => Start::Fresh { stale },
        Some(s) if s.identity == identity => Start::Restart,
        Some(s) => Start::Upgrade {
            from: s.identity.clone(),
        },
    };
    let env = KernelEnv {
        page_size: facts.page_size,
        possible_cpus: facts.possible_cpus,
    };
    let maps = match (&start, state) {
        (Start::Restart, Some(s)) => s
            .models
            .iter()
            .map(|m| MapPlan {
                key: m.name.clone(),
                source: set.sources.get(&m.name).cloned(),
                pin: map_pin(&m.name),
                action: MapAction::Reuse,
                verdict: Some(Verdict::Reuse),
                loses_entries: false,
                max_entries: m.max_entries,
                from: None,
                key_plan: None,
                value_plan: None,
                fields: Vec::new(),
                notes: Vec::new(),
                carry: Carry::Keep,
            })
            .collect(),
        (Start::Upgrade { .. }, Some(s)) => upgrade_maps(&set, s, options, &env),
        _ => set
            .maps
            .iter()
            .map(|m| MapPlan {
                key: m.name.clone(),
                source: set.sources.get(&m.name).cloned(),
                pin: map_pin(&m.name),
                action: MapAction::Create,
                verdict: None,
                loses_entries: false,
                max_entries: m.max_entries,
                from: None,
                key_plan: None,
                value_plan: None,
                fields: Vec::new(),
                notes: Vec::new(),
                carry: Carry::Fresh,
            })
            .collect(),
    };
    // A reused map keeps its live capacity where the new object declares another
    // (the diff reuses a map of sockets that grows): the snapshot records what is live.
    let mut models = set.maps.clone();
    let mut maps = maps;
    if let (Start::Upgrade { .. }, Some(s)) = (&start, state) {
        for m in &mut maps {
            let old_key = m.from.clone().unwrap_or_else(|| m.key.clone());
            let old = s.models.iter().find(|o| o.name == old_key);
            let new = models.iter().find(|n| n.name == m.key);
            carry::decide(m, old, new, &facts);
        }
        for m in maps.iter_mut().filter(|m| m.action == MapAction::Reuse) {
            let old = s.models.iter().find(|o| o.name == m.key);
            let new = models.iter_mut().find(|n| n.name == m.key);
            if let (Some(old), Some(new)) = (old, new)
                && old.max_entries != new.max_entries
            {
                new.max_entries = old.max_entries;
                m.max_entries = old.max_entries;
            }
        }
    }
    let restart = start == Start::Restart;
    let mut programs: Vec<ProgramPlan> = set
        .programs
        .iter()
        .map(|p| ProgramPlan {
            name: p.clone(),
            pin: prog_pin(p),
            action: if restart {
                ProgramAction::Reopen
            } else {
                ProgramAction::Load
            },
        })
        .collect();
    if let Some(s) = state {
        for old in s.programs.keys().filter(|p| !set.programs.contains(*p)) {
            programs.push(ProgramPlan {
                name: old.clone(),
                pin: prog_pin(old),
                action: ProgramAction::Remove,
            });
        }
    }
    let mut attachments = Vec::new();
    for a in &options.attachments {
        // What the installed state has under this name: where, and how it is held.
        let old = state.and_then(|s| {
            s.links
                .get(&a.name)
                .map(|l| (&l.attachment, Hold::Link))
                .or_else(|| {
                    s.attached
                        .get(&a.name)
                        .map(|r| (&r.attachment, Hold::ProgAttach))
                })
        });
        let asked = holds
            .get(&a.name)
            .copied()
            .or_else(|| a.point.asked_hold())
            .unwrap_or_default();
        // A program on a socket map that the upgrade replaces is attached to the new
        // map: the old one goes with its map.
        let map_replaced = a.point.map().is_some_and(|key| {
            maps.iter()
                .any(|m| m.key == key && m.action != MapAction::Reuse)
        });
        let (hold, action) = match old {
            // A restart keeps every attachment as it is held.
            Some((_, held)) if restart => (held, AttachAction::Verify),
            _ if restart => (asked, AttachAction::Verify),
            Some((old, held))
                if old.point.same_hook(&a.point) && held == asked && !map_replaced =>
            {
                (asked, AttachAction::Switch(a.point.switch_method(asked)))
            }
            // A new place (or a new attachment, or another way to hold it): attached
            // anew; an old link of the same name is replaced at commit, an old
            // attachment without a link is detached then.
            _ => (asked, AttachAction::Attach),
        };
        if let Some((old, held)) = old
            && action == AttachAction::Attach
            && (held == Hold::ProgAttach || hold != held)
        {
            attachments.push(AttachPlan {
                name: a.name.clone(),
                program: old.program.clone(),
                point: old.point.clone(),
                pin: match held {
                    Hold::Link => link_pin(&a.name),
                    Hold::ProgAttach => String::new(),
                },
                hold: held,
                action: AttachAction::Detach,
            });
        }
        attachments.push(AttachPlan {
            name: a.name.clone(),
            program: a.program.clone(),
            point: a.point.clone(),
            pin: match hold {
                Hold::Link => link_pin(&a.name),
                Hold::ProgAttach => String::new(),
            },
            hold,
            action,
        });
    }
    if let Some(s) = state {
        for (name, l) in &s.links {
            if !options.attachments.iter().any(|a| &a.name == name) {
                attachments.push(AttachPlan {
                    name: name.clone(),
                    program: l.attachment.program.clone(),
                    point: l.attachment.point.clone(),
                    pin: l.pin.clone(),
                    hold: Hold::Link,
                    action: AttachAction::Detach,
                });
            }
        }
        for (name, r) in &s.attached {
            if !options.attachments.iter().any(|a| &a.name == name) {
                attachments.push(AttachPlan {
                    name: name.clone(),
                    program: r.attachment.program.clone(),
                    point: r.attachment.point.clone(),
                    pin: String::new(),
                    hold: Hold::ProgAttach,
                    action: AttachAction::Detach,
                });
            }
        }
    }
    Ok(Plan {
        identity,
        start,
        objects: records(objects),
        options: options.clone(),
        live,
        maps,
        programs,
        attachments,
        models,
    })
}

fn upgrade_maps(set: &SetModel, state: &State, options: &Options, env: &KernelEnv) -> Vec<MapPlan> {
    // Declared renames: the old map is diffed as if it had the new key.
    let renamed_from: BTreeMap<&str, &str> = options
        .renames
        .iter()
        .map(|(new, old)| (old.as_str(), new.as_str()))
        .collect();
    let old_models: Vec<MapModel> = state
        .models
        .iter()
        .cloned()
        .map(|mut m| {
            if let Some(new) = renamed_from.get(m.name.as_str()) {
                m.name = (*new).to_owned();
            }
            m
        })
        .collect();
    let report = diff_maps(&old_models, &set.maps, options.policy, env);
    report
        .maps
        .into_iter()
        .map(|d| {
            let from = options.renames.get(&d.name).cloned();
            let old_key = from.clone().unwrap_or_else(|| d.name.clone());
            let new_model = set.maps.iter().find(|m| m.name == d.name);
            let action = match d.verdict {
                Verdict::Reuse => MapAction::Reuse,
                Verdict::New | Verdict::Recreate => MapAction::Create,
                Verdict::Removed => MapAction::Remove,
                Verdict::Grow | Verdict::Shrink | Verdict::Migrate | Verdict::Rekey => {
                    MapAction::Copy
                }
            };
            // A reused map under another name is carried by copy: the live map
            // keeps its pin until the old set is released.
            let action = if action == MapAction::Reuse && from.is_some() {
                MapAction::Copy
            } else {
                action
            };
            let mut notes = d.notes;
            // A tombstone map starts empty at every upgrade: it must hold only what
            // the new programs wrote since the switch.
            let tombstones = options.tombstones.values().any(|t| *t == d.name);
            let (action, loses_entries) = if tombstones && action != MapAction::Remove {
                notes.push(
                    "a tombstone map: created empty by every upgrade, so that it holds only \
                     the keys the new programs wrote during this one"
                        .to_owned(),
                );
                (MapAction::Create, false)
            } else {
                (action, d.loses_entries)
            };
            notes.extend(
                d.changes
                    .iter()
                    .map(|c| format!("{}: {} -> {}", c.attribute, c.old, c.new)),
            );
            MapPlan {
                pin: if action == MapAction::Remove {
                    state
                        .maps
                        .get(&d.name)
                        .map_or_else(|| map_pin(&d.name), |p| p.pin.clone())
                } else {
                    map_pin(&d.name)
                },
                source: set.sources.get(&d.name).cloned(),
                key: d.name,
                action,
                verdict: Some(d.verdict),
                loses_entries,
                max_entries: new_model.map_or(0, |m| m.max_entries),
                from: (old_key != new_model.map_or(String::new(), |m| m.name.clone())
                    && new_model.is_some())
                .then_some(old_key),
                key_plan: d.key_plan,
                value_plan: d.value_plan,
                fields: d.fields,
                notes,
                carry: Carry::Fresh,
            }
        })
        .collect()
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let short = |s: &str| s.get(..12).unwrap_or(s).to_owned();
        match &self.start {
            Start::Fresh { stale: None } => {
                writeln!(f, "fresh install of {}", short(&self.identity))?
            }
            Start::Fresh { stale: Some(why) } => writeln!(
                f,
                "fresh install of {} (the recorded state is stale: {why})",
                short(&self.identity)
            )?,
            Start::Restart => {
                writeln!(f, "restart of {}: nothing is loaded", short(&self.identity))?
            }
            Start::Upgrade { from } => {
                writeln!(
                    f,
                    "upgrade from {} to {}",
                    short(from),
                    short(&self.identity)
                )?;
            }
            Start::Interrupted { tx } => {
                return writeln!(f, "interrupted upgrade {tx}: applying recovers it");
            }
        }
        writeln!(f, "objects:")?;
        for o in &self.objects {
            writeln!(
                f,
                "  {} ({} bytes, sha256 {})",
                o.name,
                o.size,
                short(&o.sha256)
            )?;
        }
        writeln!(f, "maps:")?;
        for m in &self.maps {
            let verdict = m
                .verdict
                .map_or(String::new(), |v| format!(" ({})", v.as_str()));
            let from = m
                .from
                .as_ref()
                .map_or(String::new(), |k| format!(" from {k}"));
            let lost = if m.loses_entries {
                "  ENTRIES LOST"
            } else {
                ""
            };
            writeln!(
                f,
                "  {:<24} {}{verdict}{from} at {}, {} entries max{lost}",
                m.key,
                m.action.as_str(),
                m.pin,
                m.max_entries
            )?;
            for field in &m.fields {
                let side = match field.side {
                    Side::Key => "key",
                    Side::Value => "value",
                };
                let loc = |l: &Option<crate::upstream::FieldLoc>| {
                    l.as_ref().map_or("-".to_owned(), |l| {
                        format!("{} @{}:{}", l.ty, l.bit_offset, l.bits)
                    })
                };
                writeln!(
                    f,
                    "      {side} {:<20} {:<10} {} -> {}",
                    if field.path.is_empty() {
                        "(whole)"
                    } else {
                        &field.path
                    },
                    field.action.as_str(),
                    loc(&field.old),
                    loc(&field.new)
                )?;
            }
            for n in &m.notes {
                writeln!(f, "      {n}")?;
            }
            writeln!(f, "      entries: {}", m.carry)?;
        }
        writeln!(f, "programs:")?;
        for p in &self.programs {
            let action = match p.action {
                ProgramAction::Load => "load and verify against the new maps",
                ProgramAction::Reopen => "reopen",
                ProgramAction::Remove => "remove",
            };
            writeln!(f, "  {:<24} {action} at {}", p.name, p.pin)?;
        }
        writeln!(f, "attachments:")?;
        if self.attachments.is_empty() {
            writeln!(f, "  none")?;
        }
        for a in &self.attachments {
            let on_map = a.point.map().is_some();
            let action = match (a.action, a.hold) {
                (AttachAction::Attach, Hold::ProgAttach) if on_map => {
                    "attach to the map (prog attach; only sockets added to the map from \
                     then on run it)"
                        .to_owned()
                }
                (AttachAction::Verify, Hold::ProgAttach) if on_map => {
                    "verify it is the map's program (prog query, 5.19+; attached again \
                     where the kernel cannot say)"
                        .to_owned()
                }
                (AttachAction::Attach, Hold::Link) => "attach a new link".to_owned(),
                (AttachAction::Attach, Hold::ProgAttach) => {
                    "attach without a link (prog attach, allow multi)".to_owned()
                }
                (AttachAction::Switch(m), _) => format!("switch: {m}"),
                (AttachAction::Verify, Hold::Link) => {
                    "verify it is live, re-attach if not".to_owned()
                }
                (AttachAction::Verify, Hold::ProgAttach) => {
                    "verify it is attached (prog query), re-attach if not".to_owned()
                }
                (AttachAction::Detach, Hold::Link) => "detach and remove".to_owned(),
                (AttachAction::Detach, Hold::ProgAttach) => {
                    "detach the recorded program (prog detach)".to_owned()
                }
            };
            writeln!(
                f,
                "  {} runs {} at {}: {action}",
                a.name, a.program, a.point
            )?;
        }
        let lost = self.lost_maps();
        if lost.is_empty() {
            writeln!(f, "entries lost: none")
        } else {
            writeln!(
                f,
                "entries lost: {} (needs allow_state_loss)",
                lost.join(", ")
            )
        }
    }
}
