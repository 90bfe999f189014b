//! The upgrade executor: the one part of the pipeline above the pure spec, diff and plan
//! stages that acts on the kernel. It executes a plan step by step under a write-ahead
//! journal, so that a crash at any step is followed by a roll-forward or a rollback to
//! exactly one consistent set of pins.
//!
//! A daemon opens an [`Engine`] on its pin root and state directory (taking an
//! exclusive lock), asks it for the [`Plan`] of loading its object set with its
//! [`Options`] — a fresh install, a restart (same identity: nothing is loaded), an
//! upgrade, or the recovery of an interrupted one, told apart by content — and
//! applies it, getting a [`Report`] and handles to its maps and programs by name.
//!
//! The engine acts on the kernel only through the [`Kernel`] trait: [`RealKernel`]
//! over bpf(2) and bpffs, and [`FakeKernel`], an in-memory model that the crash tests
//! drive through every crash point.

#![deny(unsafe_code)]

pub mod migrate;

mod capacity;
mod carry;
mod datapath;
mod engine;
mod error;
mod fake;
mod files;
mod inspect;
mod kernel;
mod options;
mod plan;
mod probes;
mod progress;
mod real;
mod sockets;
mod state;
mod step;
mod upstream;
mod writer;

pub use carry::Carry;
pub use engine::{ApplyOptions, Engine, Recovered, Report, TypedMap, Uninstalled, wait_gone};
pub use error::Error;
pub use fake::{FakeKernel, FakeWorld, Running};
pub use files::LockWait;
pub use inspect::{
    InspectedMap, Inspector, JournalStatus, LinkState, LinkStatus, PinState, PinStatus, Status,
};
pub use kernel::{Kernel, KernelError, KernelFacts, Kind, LoadedSet, ObjRef, ObjectSource};
pub use options::{
    AttachPoint, Attachment, DeltaBounds, Hold, InnerMapOption, LayoutOption, Options,
    ProgramTypeOption, SwitchMethod, TcDirection, Via, identity,
};
pub use plan::{
    AttachAction, AttachPlan, LiveState, MapAction, MapPlan, Plan, ProgramAction, ProgramPlan,
    Start, map_key, pin_name,
};
pub use progress::{CopyProgress, ProgressFn};
pub use real::RealKernel;
pub use state::{
    AttachedRecord, Direction, Journal, LinkRecord, MapCounts, ObjectRecord, Phase, Pinned, Staged,
    State,
};
pub use step::{OTHER_POINTS, ROLLBACK_POINTS, Step, failpoints};
pub use upstream::MergeRule;
pub use writer::MapWriter;
