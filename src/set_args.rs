//! What the commands acting on an installed set share: where the set lives (pin root,
//! state directory), its objects and load options read from the command line, the
//! stored plan file, and how the engine's refusals map to exit codes.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use handover::engine::{
    AttachPoint, Attachment, Engine, Error as EngineError, LayoutOption, LockWait, ObjectSource,
    Options, Plan, ProgramTypeOption, RealKernel,
};
use handover::loader::{MAX_OBJECT_SIZE, Object, ObjectOptions, read_regular, write_regular};
use handover::uapi::ProgramType;
use serde::{Deserialize, Serialize};

use crate::cli::{LoadArgs, LockArgs, ProgramTypeRule, SetArgs};

/// `plan`/`upgrade`: map entries would be lost.
pub(crate) const EXIT_LOSES_ENTRIES: u8 = crate::EXIT_LOSES_ENTRIES;
/// `upgrade --plan`: the live state is not the one the plan was made against.
pub(crate) const EXIT_STALE: u8 = 5;
/// The state directory is locked by another process.
pub(crate) const EXIT_LOCKED: u8 = 6;

/// Where the state directories live by default: outside bpffs, which holds no
/// regular files.
pub(crate) const STATE_BASE: &str = "/var/lib/handover";

/// An error that ends a command with an exit code of its own.
#[derive(Debug)]
pub(crate) struct Refusal {
    pub code: u8,
    pub message: String,
}

/// A command's failure: a message (exit 1) or a refusal with its own code.
pub(crate) type Failure = Refusal;

impl From<String> for Refusal {
    fn from(message: String) -> Self {
        Self { code: 1, message }
    }
}

/// Maps an engine error to its exit code and message.
pub(crate) fn engine_failure(e: &EngineError) -> Refusal {
    let code = match e {
        EngineError::Locked { .. } => EXIT_LOCKED,
        EngineError::Stale(_) => EXIT_STALE,
        EngineError::StateLoss { .. } => EXIT_LOSES_ENTRIES,
        _ => 1,
    };
    let mut message = crate::error_chain(e);
    if let EngineError::StateLoss { .. } = e {
        message = format!("{message} (give --allow-state-loss)");
    }
    Refusal { code, message }
}

/// Runs a command body and turns a refusal into its exit code, printing it.
pub(crate) fn finish(command: &str, r: Result<ExitCode, Refusal>) -> Result<ExitCode, String> {
    match r {
        Ok(code) => Ok(code),
        Err(Refusal { code: 1, message }) => Err(message),
        Err(Refusal { code, message }) => {
            crate::output::error(&format!("handover {command}: {message}"));
            Ok(ExitCode::from(code))
        }
    }
}

/// The pin root and state directory of a set.
#[derive(Debug, Clone)]
pub(crate) struct Place {
    pub root: PathBuf,
    pub state: PathBuf,
}

/// `path` as `systemd-escape --path` writes it: slashes at the ends dropped, inner
/// ones as `-`, every byte other than ASCII letters, digits, `:`, `_` and `.` (and a
/// leading `.`) as `\xNN`; the root directory itself as `-`.
pub(crate) fn escape_path(path: &Path) -> String {
    use std::fmt::Write as _;
    use std::os::unix::ffi::OsStrExt as _;
    let bytes = path.as_os_str().as_bytes();
    let parts: Vec<&[u8]> = bytes
        .split(|b| *b == b'/')
        .filter(|p| !p.is_empty())
        .collect();
    if parts.is_empty() {
        return "-".to_owned();
    }
    let mut out = String::new();
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            out.push('-');
        }
        for (j, &b) in part.iter().enumerate() {
            let plain = b.is_ascii_alphanumeric() || b == b':' || b == b'_' || b == b'.';
            if plain && !(b == b'.' && i == 0 && j == 0) {
                out.push(char::from(b));
            } else {
                let _ = write!(out, "\\x{b:02x}");
            }
        }
    }
    out
}

impl Place {
    /// The pin root (made absolute, so that the state records it one way) and the
    /// state directory: `--state`, or [`STATE_BASE`]/ESCAPED_ROOT.
    pub(crate) fn of(set: &SetArgs) -> Result<Self, String> {
        let root = std::fs::canonicalize(&set.root).map_err(|e| {
            format!(
                "pin root {}: {e}; give a directory on a bpffs (mount -t bpf bpf DIR)",
                set.root.display()
            )
        })?;
        let state = set
            .state
            .clone()
            .unwrap_or_else(|| Path::new(STATE_BASE).join(escape_path(&root)));
        Ok(Self { root, state })
    }

    /// Opens the engine on the set; when another process holds its lock, refuses at
    /// once or waits as `--wait` says.
    pub(crate) fn engine(&self, lock: &LockArgs) -> Result<Engine<RealKernel>, Refusal> {
        let wait = lock.wait.map_or(LockWait::Refuse, |s| {
            LockWait::Timeout(std::time::Duration::from_secs(s))
        });
        Engine::open(&self.root, &self.state, wait).map_err(|e| engine_failure(&e))
    }
}

/// The objects of a load, read from files and named by their file names.
pub(crate) fn read_objects(paths: &[PathBuf]) -> Result<Vec<ObjectSource>, String> {
    paths
        .iter()
        .map(|p| {
            let bytes = read_regular(p, MAX_OBJECT_SIZE, "BPF object files (MAX_OBJECT_SIZE)")
                .map_err(|e| crate::error_chain(&e))?;
            let name = p.file_name().map_or_else(
                || p.display().to_string(),
                |n| n.to_string_lossy().into_owned(),
            );
            Ok(ObjectSource::new(name, bytes))
        })
        .collect()
}

fn parse<'a>(o: &'a ObjectSource, options: &ObjectOptions) -> Result<Object<'a>, String> {
    Object::parse_with(&o.bytes, options).map_err(|e| {
        format!(
            "object {}: {}",
            handover::btf::printable(&o.name),
            crate::error_chain(&e)
        )
    })
}

/// Whether programs of this type attach to a cgroup.
fn attaches_to_cgroup(t: ProgramType) -> bool {
    matches!(
        t,
        ProgramType::CgroupSkb
            | ProgramType::CgroupSock
            | ProgramType::CgroupSockAddr
            | ProgramType::SockOps
            | ProgramType::CgroupSockopt
            | ProgramType::CgroupSysctl
            | ProgramType::CgroupDevice
    )
}

/// The program-type rules as the engine takes them: by exact section, a prefix or
/// `*` expanded to the sections of `objects` it matches.
fn program_types(
    objects: &[ObjectSource],
    rules: &[ProgramTypeRule],
) -> Result<std::collections::BTreeMap<String, ProgramTypeOption>, String> {
    let mut sections = Vec::new();
    for o in objects {
        for p in parse(o, &ObjectOptions::new())?.programs() {
            if !sections.contains(&p.section) {
                sections.push(p.section.clone());
            }
        }
    }
    let mut out = std::collections::BTreeMap::new();
    for r in rules {
        let matched: Vec<&String> = sections
            .iter()
            .filter(|s| match r.section.strip_suffix('*') {
                Some(prefix) => s.starts_with(prefix),
                None => **s == r.section,
            })
            .collect();
        if matched.is_empty() {
            return Err(format!(
                "--program-type names section `{}`, which no program of the objects is in",
                handover::btf::printable(&r.section)
            ));
        }
        for s in matched {
            out.insert(
                s.clone(),
                ProgramTypeOption {
                    prog_type: r.program_type.name().to_owned(),
                    attach_type: r.attach_type.map(|a| a.name().to_owned()),
                },
            );
        }
    }
    Ok(out)
}

/// The attachment an `--attach-map` asks for: an sk_msg or sk_skb program of the set
/// on a socket map, at the attach type given or the one its section says.
fn map_attachment(
    objects: &[ObjectSource],
    object_options: &ObjectOptions,
    a: &crate::cli::AttachMap,
    via: handover::engine::Via,
) -> Result<Attachment, String> {
    let name = handover::btf::printable(&a.program);
    let mut found = None;
    for o in objects {
        if let Some(p) = parse(o, object_options)?
            .programs()
            .iter()
            .find(|p| p.name == a.program)
        {
            found = Some((p.prog_type, p.attach_type_name()));
        }
    }
    let Some((prog_type, section_attach)) = found else {
        return Err(format!(
            "--attach-map names program `{name}`, which no object of the set has"
        ));
    };
    if !matches!(prog_type, ProgramType::SkMsg | ProgramType::SkSkb) {
        return Err(format!(
            "--attach-map: program `{name}` is a {} program; a socket map holds sk_msg and \
             sk_skb programs",
            prog_type.name()
        ));
    }
    let attach_type = match (&a.attach_type, section_attach) {
        (Some(t), _) => t.clone(),
        (None, Some(t)) => t.to_owned(),
        (None, None) => {
            return Err(format!(
                "--attach-map: the section of program `{name}` says no attach type; give \
                 --attach-map {name}={}:ATTACH_TYPE",
                handover::btf::printable(&a.map)
            ));
        }
    };
    Ok(Attachment {
        name: a.program.clone(),
        program: a.program.clone(),
        point: AttachPoint::SockMap {
            map: a.map.clone(),
            attach_type,
            target: None,
            via,
        },
    })
}

/// Builds the engine's options from the command line: every option that is part of
/// the load's identity.
pub(crate) fn options(objects: &[ObjectSource], args: &LoadArgs) -> Result<Options, String> {
    let program_types = program_types(objects, &args.program_type)?;
    let mut object_options = ObjectOptions::new();
    for (section, t) in &program_types {
        let prog_type = t.prog_type.parse().map_err(|e| format!("{e}"))?;
        let attach = match &t.attach_type {
            Some(a) => Some(a.parse().map_err(|e| format!("{e}"))?),
            None => None,
        };
        object_options = object_options.program_type(section, prog_type, attach);
    }
    let cgroup =
        match &args.cgroup {
            Some(c) => Some(std::fs::canonicalize(c).map_err(|e| {
                format!("--cgroup {}: {e}; give a cgroup v2 directory", c.display())
            })?),
            None => None,
        };
    let mut attachments = Vec::new();
    let (mut cgroup_programs, mut xdp_programs) = (0, 0);
    for o in objects {
        for p in parse(o, &object_options)?.programs() {
            let point = if attaches_to_cgroup(p.prog_type) {
                cgroup_programs += 1;
                let Some(path) = &cgroup else { continue };
                let attach_type = p.attach_type_name().ok_or_else(|| {
                    format!(
                        "program {} (section {}) attaches to a cgroup, but its section says \
                         no attach type; give --program-type {}=TYPE:ATTACH",
                        handover::btf::printable(&p.name),
                        handover::btf::printable(&p.section),
                        handover::btf::printable(&p.section)
                    )
                })?;
                AttachPoint::Cgroup {
                    path: path.clone(),
                    attach_type: attach_type.to_owned(),
                    via: args.cgroup_via.unwrap_or_default(),
                }
            } else if p.prog_type == ProgramType::Xdp {
                xdp_programs += 1;
                let Some(iface) = &args.iface else { continue };
                AttachPoint::Xdp {
                    iface: iface.clone(),
                }
            } else {
                continue;
            };
            attachments.push(Attachment {
                name: p.name.clone(),
                program: p.name.clone(),
                point,
            });
        }
    }
    for a in &args.attach_map {
        attachments.push(map_attachment(
            objects,
            &object_options,
            a,
            args.map_via.unwrap_or_default(),
        )?);
    }
    if cgroup.is_some() && cgroup_programs == 0 {
        return Err("--cgroup is given, but no program of the objects attaches to a cgroup".into());
    }
    if args.iface.is_some() && xdp_programs == 0 {
        return Err("--iface is given, but no program of the objects is an XDP program".into());
    }
    let mut layouts = std::collections::BTreeMap::new();
    for h in &args.layout {
        let l = LayoutOption {
            key: h.key.clone(),
            value: h.value.clone(),
        };
        if layouts.insert(h.map.clone(), l).is_some() {
            return Err(format!(
                "--layout is given twice for map `{}`",
                handover::btf::printable(&h.map)
            ));
        }
    }
    Ok(Options {
        policy: args.policy.map_or(handover::Policy::Migrate, Into::into),
        program_types,
        renames: args.rename.iter().cloned().collect(),
        merge_rules: args.merge.iter().cloned().collect(),
        tombstones: args.tombstones.iter().cloned().collect(),
        attachments,
        layouts,
        // No command-line form yet for inner_maps: a map-in-map declared with sizes
        // only is refused.
        ..Options::default()
    })
}

/// The format name of plan files.
const PLAN_FORMAT: &str = "handover-plan";
/// The largest plan file read: as large as a snapshot may be.
const MAX_PLAN_SIZE: u64 = handover::MAX_SNAPSHOT_SIZE;

/// A plan stored by `handover plan -o`, for `handover upgrade --plan`.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct PlanFile {
    pub format: String,
    pub format_version: u32,
    /// The pin root it was made for.
    pub root: PathBuf,
    /// The objects' files, absolute.
    pub objects: Vec<PathBuf>,
    pub plan: Plan,
}

impl PlanFile {
    pub(crate) fn new(root: &Path, objects: &[PathBuf], plan: Plan) -> Result<Self, String> {
        let objects = objects
            .iter()
            .map(|p| std::fs::canonicalize(p).map_err(|e| format!("{}: {e}", p.display())))
            .collect::<Result<_, _>>()?;
        Ok(Self {
            format: PLAN_FORMAT.to_owned(),
            format_version: 1,
            root: root.to_owned(),
            objects,
            plan,
        })
    }

    pub(crate) fn write(&self, path: &Path) -> Result<(), String> {
        let mut bytes =
            serde_json::to_vec_pretty(self).map_err(|e| format!("encoding the plan: {e}"))?;
        bytes.push(b'\n');
        write_regular(path, &bytes).map_err(|e| format!("writing plan {}", crate::error_chain(&e)))
    }

    pub(crate) fn read(path: &Path) -> Result<Self, String> {
        let bytes = read_regular(path, MAX_PLAN_SIZE, "plan files (MAX_SNAPSHOT_SIZE)")
            .map_err(|e| crate::error_chain(&e))?;
        let file: Self = serde_json::from_slice(&bytes).map_err(|e| {
            format!(
                "{} is not a plan written by `handover plan -o`: {e}",
                path.display()
            )
        })?;
        if file.format != PLAN_FORMAT || file.format_version != 1 {
            return Err(format!(
                "{} is a {} file of version {}, not a {PLAN_FORMAT} file of version 1",
                path.display(),
                file.format,
                file.format_version
            ));
        }
        Ok(file)
    }
}

#[cfg(test)]
mod tests {
    use super::escape_path;
    use std::path::Path;

    #[test]
    fn state_directories_are_named_as_systemd_escapes_paths() {
        assert_eq!(
            escape_path(Path::new("/sys/fs/bpf/daemon")),
            "sys-fs-bpf-daemon"
        );
        assert_eq!(escape_path(Path::new("/")), "-");
        assert_eq!(
            escape_path(Path::new("/sys/fs/bpf/my-daemon v2/")),
            "sys-fs-bpf-my\\x2ddaemon\\x20v2"
        );
        assert_eq!(escape_path(Path::new("/.hidden/a.b")), "\\x2ehidden-a.b");
    }
}
