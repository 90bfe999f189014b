//! The command line, as `clap` derive types: every command, option and value, with
//! the help text and examples `--help` shows. Values are checked here, so an unknown
//! one is refused naming the value and what is accepted.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use handover::{LayoutHint, Policy};
use handover_loader::ProgramTypes;
use handover_uapi::{AttachType, ProgramType};

/// Restart and upgrade eBPF daemons without losing traffic or map state.
#[derive(Debug, Parser)]
#[command(
    name = "handover",
    version,
    about,
    after_help = crate::exit_codes!(),
    after_long_help = concat!(
        "Examples:\n",
        "  handover btf dump /sys/kernel/btf/vmlinux\n",
        "  handover inspect daemon.bpf.o\n",
        "  handover snapshot daemon.bpf.o -o maps.json\n",
        "  handover diff maps.json daemon-next.bpf.o\n",
        "  handover upgrade --root /sys/fs/bpf/daemon daemon.bpf.o --cgroup /sys/fs/cgroup/daemon\n",
        "  handover status --root /sys/fs/bpf/daemon\n\n",
        crate::exit_codes!(),
    )
)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// BTF of a file: `handover btf dump FILE`.
    Btf {
        #[command(subcommand)]
        command: BtfCommand,
    },
    /// Every map and program of a BPF object.
    #[command(after_help = "Examples:\n  handover inspect daemon.bpf.o\n  \
        handover inspect daemon.bpf.o --json\n  \
        handover inspect daemon.bpf.o --program-type my_hook=sock_ops:cgroup_sock_ops")]
    Inspect(InspectArgs),
    /// Writes the map specs of BPF objects to a snapshot file, kept for the next upgrade.
    #[command(
        after_help = "Examples:\n  handover snapshot daemon.bpf.o -o maps.json\n  \
        handover snapshot a.bpf.o b.bpf.o -o maps.json\n  \
        handover snapshot daemon.bpf.o --layout endpoints=key:ep_key,value:ep_value -o maps.json"
    )]
    Snapshot(SnapshotArgs),
    /// What an upgrade from OLD to NEW does with every map.
    #[command(after_help = concat!(
        "Examples:\n",
        "  handover diff daemon-1.0.bpf.o daemon-1.1.bpf.o\n",
        "  handover diff maps.json daemon-1.1.bpf.o --policy strict --json\n",
        "  handover diff old.o new.o --layout endpoints=key:ep_key,value:ep_value\n\n",
        "Exit codes:\n",
        "  0  every entry is carried with every field value\n",
        "  1  failure\n",
        "  2  usage error\n",
        "  3  map entries would be lost\n",
        "  4  every entry is carried, but some field values are dropped",
    ))]
    Diff(DiffArgs),
    /// What upgrading the set at --root to OBJ... would do, per map and field; changes
    /// nothing.
    #[command(after_help = concat!(
        "Examples:\n",
        "  handover plan --root /sys/fs/bpf/daemon daemon.bpf.o --cgroup /sys/fs/cgroup/daemon\n",
        "  handover plan --root /sys/fs/bpf/daemon daemon.bpf.o -o upgrade.plan\n",
        "  handover plan --root /sys/fs/bpf/daemon a.bpf.o b.bpf.o --merge backends.packets=sum --json\n\n",
        "Exit codes:\n",
        "  0  every entry is carried with every field value (or a fresh install, a restart)\n",
        "  1  failure\n",
        "  2  usage error\n",
        "  3  map entries would be lost (upgrade needs --allow-state-loss)\n",
        "  4  every entry is carried, but some field values are dropped\n",
        "  6  the state directory is locked by another process",
    ))]
    Plan(PlanArgs),
    /// Installs, restarts or upgrades the set at --root: OBJ... with the options
    /// given, or exactly the plan stored by `handover plan -o`.
    #[command(after_help = concat!(
        "Examples:\n",
        "  handover upgrade --root /sys/fs/bpf/daemon daemon.bpf.o --cgroup /sys/fs/cgroup/daemon\n",
        "  handover upgrade --root /sys/fs/bpf/daemon --plan upgrade.plan\n",
        "  handover upgrade --root /sys/fs/bpf/daemon daemon.bpf.o --policy strict --allow-state-loss\n\n",
        "Exit codes:\n",
        "  0  installed, restarted or upgraded (or an interrupted upgrade recovered)\n",
        "  1  failure (an upgrade that fails before its switch is rolled back)\n",
        "  2  usage error\n",
        "  3  refused: map entries would be lost; see the plan, and give --allow-state-loss to accept\n",
        "  5  refused: the live state is no longer the one the plan was made against\n",
        "  6  the state directory is locked by another process",
    ))]
    Upgrade(UpgradeArgs),
    /// The set at --root: its pins, attachments (live or missing), snapshot and
    /// the journal of an unfinished upgrade.
    #[command(after_help = concat!(
        "Examples:\n",
        "  handover status --root /sys/fs/bpf/daemon\n",
        "  handover status --root /sys/fs/bpf/daemon --state /run/daemon/handover --json\n\n",
        "Exit codes:\n",
        "  0  shown (whatever the state)\n",
        "  1  failure (the state is unreadable or not trusted)\n",
        "  2  usage error",
    ))]
    Status(StatusArgs),
    /// Every entry of a map of the set at --root, decoded by the layouts of the
    /// set's snapshot.
    #[command(after_help = concat!(
        "Examples:\n",
        "  handover dump --root /sys/fs/bpf/daemon backends\n",
        "  handover dump --root /sys/fs/bpf/daemon backends --json | jq '.[0]'\n",
        "  handover dump --root /sys/fs/bpf/daemon .data:daemon.bpf.o\n\n",
        "Exit codes:\n",
        "  0  every entry printed (or the reader closed the pipe)\n",
        "  1  failure (no such map, the map is not the one the state records)\n",
        "  2  usage error",
    ))]
    Dump(DumpArgs),
    /// Finishes or rolls back an interrupted upgrade of the set at --root now.
    #[command(after_help = concat!(
        "Examples:\n",
        "  handover recover --root /sys/fs/bpf/daemon\n",
        "  handover recover --root /sys/fs/bpf/daemon --json\n\n",
        "Exit codes:\n",
        "  0  recovered, or nothing to recover\n",
        "  1  failure\n",
        "  2  usage error\n",
        "  6  the state directory is locked by another process",
    ))]
    Recover(ChangeArgs),
    /// Removes the set at --root: links detached, every pin and the state removed.
    #[command(after_help = concat!(
        "Examples:\n",
        "  handover uninstall --root /sys/fs/bpf/daemon\n",
        "  handover uninstall --root /sys/fs/bpf/daemon --state /run/daemon/handover --json\n\n",
        "Exit codes:\n",
        "  0  removed, or nothing was installed\n",
        "  1  failure (the state is kept: run it again)\n",
        "  2  usage error\n",
        "  6  the state directory is locked by another process",
    ))]
    Uninstall(ChangeArgs),
    /// Runs the mesh demo: a Kmesh-like dataplane and its daemon restarted, killed,
    /// upgraded and uninstalled under live traffic, in a private bpffs, cgroup and
    /// network namespace (needs root).
    #[command(
        after_help = "Examples:\n  handover demo\n  handover demo --json --rate 500 --phase-ms 5000"
    )]
    Demo(DemoArgs),
    /// The demo's daemon (meshd with an embedded dataplane version).
    #[command(name = "__demo-meshd", hide = true)]
    DemoMeshd {
        #[arg(long)]
        version: String,
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        rest: Vec<String>,
    },
    /// The demo's clients and backends (the traffic harness on stdin and stdout).
    #[command(name = "__demo-traffic", hide = true)]
    DemoTraffic {
        #[arg(long)]
        cgroup: PathBuf,
    },
}

/// Where an installed set lives: shared by every command that acts on one.
#[derive(Debug, Args)]
pub(crate) struct SetArgs {
    /// The pin root: a directory on a bpffs under which the set's maps, programs and
    /// links are pinned (`maps/`, `progs/`, `links/`).
    #[arg(long, value_name = "DIR")]
    pub root: PathBuf,
    /// The state directory (snapshot of the map specs, journal, lock). Default:
    /// /var/lib/handover/ROOT, ROOT being the pin root's absolute path escaped as
    /// `systemd-escape --path` does (/sys/fs/bpf/daemon -> sys-fs-bpf-daemon).
    #[arg(long, value_name = "DIR")]
    pub state: Option<PathBuf>,
    /// Print JSON for machines instead of text.
    #[arg(long)]
    pub json: bool,
}

/// How a command that changes the set takes its lock.
#[derive(Debug, Args)]
pub(crate) struct LockArgs {
    /// When another process holds the state directory's lock (a daemon, another
    /// upgrade), wait for it at most SECONDS instead of exiting with 6 at once.
    #[arg(long, value_name = "SECONDS")]
    pub wait: Option<u64>,
}

/// The arguments of `recover` and `uninstall`: the set and how to take its lock.
#[derive(Debug, Args)]
pub(crate) struct ChangeArgs {
    #[command(flatten)]
    pub set: SetArgs,
    #[command(flatten)]
    pub lock: LockArgs,
}

/// The options that are part of a load's identity: `plan` and `upgrade` take the
/// same ones, so that a plan is made for exactly the load that is executed.
#[derive(Debug, Args)]
pub(crate) struct LoadArgs {
    /// Program type (and expected attach type) of the programs of a section whose
    /// name does not say them: `my_hook=sock_ops:cgroup_sock_ops`; a SECTION ending
    /// in `*` is a prefix, `*` alone every program. Repeatable.
    #[arg(long, value_name = "SECTION=TYPE[:ATTACH]", value_parser = parse_program_type)]
    pub program_type: Vec<ProgramTypeRule>,
    /// Layout of a map declared with key_size/value_size only:
    /// `endpoints=key:ep_key,value:ep_value`. Repeatable.
    #[arg(long, value_name = "MAP=key:STRUCT,value:STRUCT", value_parser = parse_layout)]
    pub layout: Vec<LayoutHint>,
    /// Attach every cgroup program of the set (cgroup_skb, cgroup_sock, sock_addr,
    /// sock_ops, sockopt, sysctl, device) to this cgroup v2 directory, by a pinned
    /// link named after the program.
    #[arg(long, value_name = "PATH")]
    pub cgroup: Option<PathBuf>,
    /// How the --cgroup attachments are held: `link` (a pinned cgroup link),
    /// `prog-attach` (BPF_PROG_ATTACH with BPF_F_ALLOW_MULTI, no link: the state
    /// records the program, an upgrade replaces it with BPF_F_REPLACE), or `auto`
    /// (a link where the kernel has cgroup links for the hook, probed) [default: auto].
    #[arg(long, value_name = "link|prog-attach|auto", requires = "cgroup")]
    pub cgroup_via: Option<handover::engine::Via>,
    /// Attach every XDP program of the set to this network device.
    #[arg(long, value_name = "NAME")]
    pub iface: Option<String>,
    /// How far the upgrade goes to keep entries [default: migrate].
    #[arg(long, value_enum)]
    pub policy: Option<PolicyArg>,
    /// How the reconcile merges a field both versions changed while they ran side
    /// by side: `backends.packets=sum` (counters), `max` (timestamps), `new` (the
    /// default). Repeatable; wins over a tag in the object.
    #[arg(long, value_name = "MAP.FIELD=sum|max|new", value_parser = parse_merge)]
    pub merge: Vec<(String, handover::engine::MergeRule)>,
    /// Map NEW continues the installed map OLD under a new name: its entries are
    /// carried. Repeatable.
    #[arg(long, value_name = "NEW=OLD", value_parser = parse_rename)]
    pub rename: Vec<(String, String)>,
    /// The new programs write into TOMBSTONES (a hash or LRU hash map with MAP's key,
    /// created empty by every upgrade) the key of every entry of MAP they delete or
    /// write whole: the reconcile leaves those entries as the new programs have them,
    /// and never brings back one the old programs created late and the new ones
    /// deleted. Repeatable.
    #[arg(long, value_name = "MAP=TOMBSTONES", value_parser = parse_tombstones)]
    pub tombstones: Vec<(String, String)>,
    /// Attach the sk_msg or sk_skb program PROGRAM to the sockmap or sockhash MAP of
    /// the set, at ATTACH_TYPE (sk_msg_verdict, sk_skb_stream_parser,
    /// sk_skb_stream_verdict, sk_skb_verdict; default: what the program's section
    /// says). The map holds the program (BPF_PROG_ATTACH); sockets added to the map
    /// run it. Repeatable.
    #[arg(long, value_name = "PROGRAM=MAP[:ATTACH_TYPE]", value_parser = parse_attach_map)]
    pub attach_map: Vec<AttachMap>,
    /// How the --attach-map attachments are held: `link` (a pinned socket map link,
    /// 6.10+: an upgrade switches it by compare-and-swap), `prog-attach`
    /// (BPF_PROG_ATTACH: the map holds the program; an upgrade checks the old one by
    /// query, 5.19+, then attaches the new one over it), or `auto` (a link where the
    /// kernel has socket map links, probed) [default: auto].
    #[arg(long, value_name = "link|prog-attach|auto", requires = "attach_map")]
    pub map_via: Option<handover::engine::Via>,
}

/// One `--attach-map`.
#[derive(Debug, Clone)]
pub(crate) struct AttachMap {
    pub program: String,
    pub map: String,
    pub attach_type: Option<String>,
}

impl LoadArgs {
    /// Whether any option was given (a stored plan carries its own).
    pub(crate) fn any(&self) -> bool {
        !self.program_type.is_empty()
            || !self.layout.is_empty()
            || self.cgroup.is_some()
            || self.cgroup_via.is_some()
            || self.iface.is_some()
            || self.policy.is_some()
            || !self.merge.is_empty()
            || !self.rename.is_empty()
            || !self.tombstones.is_empty()
            || !self.attach_map.is_empty()
            || self.map_via.is_some()
    }
}

#[derive(Debug, Args)]
pub(crate) struct PlanArgs {
    #[command(flatten)]
    pub set: SetArgs,
    #[command(flatten)]
    pub lock: LockArgs,
    /// The BPF objects of the new set.
    #[arg(required = true, value_name = "OBJ")]
    pub objects: Vec<PathBuf>,
    #[command(flatten)]
    pub load: LoadArgs,
    /// Also write the plan to this file (a new or regular file; replaced
    /// atomically), for `handover upgrade --plan FILE`.
    #[arg(short, long, value_name = "PLAN")]
    pub output: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub(crate) struct UpgradeArgs {
    #[command(flatten)]
    pub set: SetArgs,
    #[command(flatten)]
    pub lock: LockArgs,
    /// The BPF objects of the new set.
    #[arg(
        value_name = "OBJ",
        required_unless_present = "plan",
        conflicts_with = "plan"
    )]
    pub objects: Vec<PathBuf>,
    #[command(flatten)]
    pub load: LoadArgs,
    /// Execute exactly this plan, written by `handover plan -o` (its objects and
    /// options are the plan's); refused if the live state changed since.
    #[arg(long, value_name = "PLAN")]
    pub plan: Option<PathBuf>,
    /// Accept a plan that loses map entries (a recreate of a map holding state, a
    /// shrink below the live entry count).
    #[arg(long)]
    pub allow_state_loss: bool,
}

#[derive(Debug, Args)]
pub(crate) struct StatusArgs {
    #[command(flatten)]
    pub set: SetArgs,
}

#[derive(Debug, Args)]
pub(crate) struct DumpArgs {
    #[command(flatten)]
    pub set: SetArgs,
    /// The map's key in the set: its name, or SECTION:OBJECT for global data
    /// (`.data:daemon.bpf.o`); `handover status` lists them.
    #[arg(value_name = "MAP")]
    pub map: String,
}

#[derive(Debug, Args)]
pub(crate) struct DemoArgs {
    /// Prints the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// Connects per second the clients aim at.
    #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u32).range(1..=5000))]
    pub rate: u32,
    /// How long each phase runs after its action, in milliseconds.
    #[arg(long, default_value_t = 3000, value_parser = clap::value_parser!(u64).range(200..=600_000))]
    pub phase_ms: u64,
}

#[derive(Debug, Subcommand)]
pub(crate) enum BtfCommand {
    /// Prints every type like `bpftool btf dump file FILE` (raw format).
    #[command(
        after_help = "Examples:\n  handover btf dump /sys/kernel/btf/vmlinux\n  \
        handover btf dump daemon.bpf.o\n  \
        handover btf dump /sys/kernel/btf/nf_tables --base /sys/kernel/btf/vmlinux"
    )]
    Dump(BtfDumpArgs),
}

#[derive(Debug, Args)]
pub(crate) struct BtfDumpArgs {
    /// A raw BTF blob (/sys/kernel/btf/vmlinux) or a BPF object with a .BTF section.
    pub file: PathBuf,
    /// FILE is split BTF on top of this base (as `bpftool --base-btf`).
    #[arg(long, value_name = "BASE_FILE")]
    pub base: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub(crate) struct InspectArgs {
    /// The BPF object (an ELF file built with clang -target bpf).
    pub object: PathBuf,
    /// Print JSON for machines instead of text.
    #[arg(long)]
    pub json: bool,
    /// Program type (and expected attach type) of the programs in a section whose
    /// name libbpf does not know (shown as type unknown without it), as the kernel's
    /// enum names in lower case without prefix: `my_hook=sock_ops:cgroup_sock_ops`.
    /// A SECTION ending in `*` is a prefix (`cgroup/connect4/*=cgroup_sock_addr`),
    /// `*` alone every program. Repeatable.
    #[arg(long, value_name = "SECTION=TYPE[:ATTACH]", value_parser = parse_program_type)]
    pub program_type: Vec<ProgramTypeRule>,
}

#[derive(Debug, Args)]
pub(crate) struct SnapshotArgs {
    /// The BPF objects whose maps the snapshot keeps.
    #[arg(required = true, value_name = "OBJ")]
    pub objects: Vec<PathBuf>,
    /// The snapshot file to write (a new or regular file; replaced atomically).
    #[arg(short, long, value_name = "FILE")]
    pub output: PathBuf,
    /// Layout of a map declared with key_size/value_size only.
    #[arg(long, value_name = "MAP=key:STRUCT,value:STRUCT", value_parser = parse_layout)]
    pub layout: Vec<LayoutHint>,
}

#[derive(Debug, Args)]
pub(crate) struct DiffArgs {
    /// The running version: a BPF object or a snapshot written by `handover snapshot`.
    pub old: PathBuf,
    /// The new version: a BPF object or a snapshot.
    pub new: PathBuf,
    /// How far the upgrade goes to keep entries.
    #[arg(long, value_enum, default_value_t = PolicyArg::Migrate)]
    pub policy: PolicyArg,
    /// Print JSON (the plan with every field mapping and conversion) instead of text.
    #[arg(long)]
    pub json: bool,
    /// Layout of a map declared with key_size/value_size only, resolved in each
    /// object's BTF: `endpoints=key:ep_key,value:ep_value` (either part may be left
    /// out). Repeatable. The C source can say the same with a declaration tag on the
    /// map: `__attribute__((btf_decl_tag("handover:value:ep_value")))`.
    #[arg(long, value_name = "MAP=key:STRUCT,value:STRUCT", value_parser = parse_layout)]
    pub layout: Vec<LayoutHint>,
    /// Compare even when OLD holds objects NEW does not: their maps are reported
    /// removed. Without it such a diff is refused, naming the missing objects.
    #[arg(long)]
    pub allow_missing_objects: bool,
}

/// `--policy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum PolicyArg {
    /// Reuse unchanged maps (capacity may grow), recreate everything else.
    Strict,
    /// Carry every entry whenever nothing is lost (grow, convert fields, re-key).
    Migrate,
}

impl From<PolicyArg> for Policy {
    fn from(p: PolicyArg) -> Policy {
        match p {
            PolicyArg::Strict => Policy::Strict,
            PolicyArg::Migrate => Policy::Migrate,
        }
    }
}

/// One `--program-type SECTION=TYPE[:ATTACH]`.
#[derive(Debug, Clone)]
pub(crate) struct ProgramTypeRule {
    pub section: String,
    pub program_type: ProgramType,
    pub attach_type: Option<AttachType>,
}

/// The rules as the loader takes them: a SECTION ending in `*` is a prefix, `*` alone
/// every program.
pub(crate) fn program_types(rules: &[ProgramTypeRule]) -> ProgramTypes {
    rules
        .iter()
        .fold(ProgramTypes::new(), |types, r| match r.section.as_str() {
            "*" => types.every(r.program_type, r.attach_type),
            s => match s.strip_suffix('*') {
                Some(prefix) => types.prefix(prefix, r.program_type, r.attach_type),
                None => types.section(s, r.program_type, r.attach_type),
            },
        })
}

fn names<T: Copy>(all: &[T], name: impl Fn(T) -> &'static str) -> String {
    all.iter().map(|t| name(*t)).collect::<Vec<_>>().join(", ")
}

/// Reads `SECTION=TYPE[:ATTACH]`. Type names hold neither `=` nor `:`, so the section
/// name is everything before the last `=`.
fn parse_program_type(value: &str) -> Result<ProgramTypeRule, String> {
    let (section, spec) = value
        .rsplit_once('=')
        .ok_or_else(|| "expected SECTION=TYPE[:ATTACH], e.g. my_hook=sched_cls".to_owned())?;
    if section.is_empty() {
        return Err("the section name before `=` is empty".to_owned());
    }
    let (ty, attach) = match spec.split_once(':') {
        Some((ty, attach)) => (ty, Some(attach)),
        None => (spec, None),
    };
    let program_type = ty.parse::<ProgramType>().map_err(|_| {
        format!(
            "unknown program type `{ty}`; accepted: {}",
            names(ProgramType::ALL, ProgramType::name)
        )
    })?;
    let attach_type = attach
        .map(|a| {
            a.parse::<AttachType>().map_err(|_| {
                format!(
                    "unknown attach type `{a}`; accepted: {}",
                    names(AttachType::ALL, AttachType::name)
                )
            })
        })
        .transpose()?;
    Ok(ProgramTypeRule {
        section: section.to_owned(),
        program_type,
        attach_type,
    })
}

fn parse_layout(value: &str) -> Result<LayoutHint, String> {
    let (map, parts) = value
        .split_once('=')
        .ok_or_else(|| "expected MAP=key:STRUCT,value:STRUCT".to_owned())?;
    if map.is_empty() {
        return Err("the map name before `=` is empty".to_owned());
    }
    let mut hint = LayoutHint {
        map: map.to_owned(),
        key: None,
        value: None,
    };
    for part in parts.split(',') {
        let (side, ty) = part
            .split_once(':')
            .ok_or_else(|| format!("`{part}` is not key:STRUCT or value:STRUCT"))?;
        let ty = ty.strip_prefix("struct ").unwrap_or(ty).trim();
        if ty.is_empty() {
            return Err(format!("`{part}` names no type"));
        }
        let slot = match side {
            "key" => &mut hint.key,
            "value" => &mut hint.value,
            other => return Err(format!("unknown part `{other}`; accepted: key, value")),
        };
        if slot.replace(ty.to_owned()).is_some() {
            return Err(format!("`{side}` is given twice"));
        }
    }
    Ok(hint)
}

fn parse_merge(value: &str) -> Result<(String, handover::engine::MergeRule), String> {
    let (field, rule) = value
        .rsplit_once('=')
        .ok_or_else(|| "expected MAP.FIELD=sum|max|new, e.g. backends.packets=sum".to_owned())?;
    match field.split_once('.') {
        Some((map, path)) if !map.is_empty() && !path.is_empty() => {}
        _ => return Err(format!("`{field}` is not MAP.FIELD")),
    }
    let rule = match rule {
        "sum" => handover::engine::MergeRule::Sum,
        "max" => handover::engine::MergeRule::Max,
        "new" => handover::engine::MergeRule::New,
        other => {
            return Err(format!(
                "unknown merge rule `{other}`; accepted: sum, max, new"
            ));
        }
    };
    Ok((field.to_owned(), rule))
}

fn parse_tombstones(value: &str) -> Result<(String, String), String> {
    match value.split_once('=') {
        Some((map, t)) if !map.is_empty() && !t.is_empty() => Ok((map.to_owned(), t.to_owned())),
        _ => Err("expected MAP=TOMBSTONES, e.g. conns=conns_tombstones".to_owned()),
    }
}

fn parse_attach_map(value: &str) -> Result<AttachMap, String> {
    let bad =
        || "expected PROGRAM=MAP[:ATTACH_TYPE], e.g. redirect=socks:sk_msg_verdict".to_owned();
    let (program, rest) = value.split_once('=').ok_or_else(bad)?;
    let (map, attach_type) = match rest.split_once(':') {
        Some((map, t)) => (map, Some(t)),
        None => (rest, None),
    };
    if program.is_empty() || map.is_empty() || attach_type.is_some_and(str::is_empty) {
        return Err(bad());
    }
    Ok(AttachMap {
        program: program.to_owned(),
        map: map.to_owned(),
        attach_type: attach_type.map(str::to_owned),
    })
}

fn parse_rename(value: &str) -> Result<(String, String), String> {
    match value.split_once('=') {
        Some((new, old)) if !new.is_empty() && !old.is_empty() => {
            Ok((new.to_owned(), old.to_owned()))
        }
        _ => Err("expected NEW=OLD, e.g. backends_v2=backends".to_owned()),
    }
}

/// Refuses a `--layout` naming a map that none of the loaded objects has: a typo
/// would otherwise change nothing, silently.
pub(crate) fn check_layout_maps(
    hints: &[LayoutHint],
    objects: &[&handover::ObjectModel],
) -> Result<(), String> {
    for h in hints {
        if !objects
            .iter()
            .any(|o| o.maps.iter().any(|m| m.name == h.map))
        {
            return Err(format!(
                "--layout names map `{}`, which no object given has",
                handover::btf::printable(&h.map)
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory as _;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn every_command_has_help_with_an_example() {
        let mut cmd = Cli::command();
        cmd.build();
        let mut stack = vec![cmd];
        while let Some(mut c) = stack.pop() {
            let leaf = c.get_subcommands().next().is_none();
            // Hidden commands are the roles `handover demo` re-executes itself in.
            if leaf && c.get_name() != "help" && !c.is_hide_set() {
                let help = c.render_long_help().to_string();
                assert!(
                    help.contains("Examples:\n  handover "),
                    "{}: {help}",
                    c.get_name()
                );
                for a in c.get_arguments() {
                    let id = a.get_id().as_str();
                    if id != "help" && id != "version" {
                        assert!(a.get_help().is_some(), "{} {id} has no help", c.get_name());
                    }
                }
            }
            stack.extend(
                c.get_subcommands()
                    .filter(|s| s.get_name() != "help")
                    .cloned(),
            );
        }
    }

    #[test]
    fn an_unknown_program_type_names_the_value_and_what_is_accepted() {
        let e = parse_program_type("x=xdpp").unwrap_err();
        assert!(
            e.contains("`xdpp`") && e.contains("xdp") && e.contains("sched_cls"),
            "{e}"
        );
        let e = parse_program_type("x=xdp:nope").unwrap_err();
        assert!(e.contains("`nope`") && e.contains("cgroup_sock_ops"), "{e}");
        let r = parse_program_type("a=b=sock_ops:cgroup_sock_ops").unwrap();
        assert_eq!(r.section, "a=b");
        assert_eq!(r.program_type, ProgramType::SockOps);
        assert_eq!(r.attach_type, Some(AttachType::CgroupSockOps));
        assert!(parse_program_type("=xdp").is_err());
    }

    #[test]
    fn layout_hints_parse_either_side() {
        assert_eq!(
            parse_layout("eps=key:ep_key,value:struct ep").unwrap(),
            LayoutHint {
                map: "eps".into(),
                key: Some("ep_key".into()),
                value: Some("ep".into())
            }
        );
        assert_eq!(parse_layout("eps=value:v").unwrap().key, None);
        for bad in ["eps", "=key:a", "eps=kee:a", "eps=key:", "eps=key:a,key:b"] {
            assert!(parse_layout(bad).is_err(), "{bad}");
        }
    }
}
