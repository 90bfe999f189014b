//! [`Inspector`]: reading an installed set without taking its lock, so that a person
//! can look at it (`handover status`, `handover dump`) while its daemon runs or an
//! upgrade is under way. The state files are replaced atomically, so a read sees one
//! whole version of each; nothing here writes, pins or attaches.

use std::path::Path;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::files::StateLock;
use crate::kernel::{Kernel, KernelError, ObjRef};
use crate::migrate::MapAccess;
use crate::options::{AttachPoint, Hold};
use crate::real::RealKernel;
use crate::state::{Direction, Journal, Phase, State, StateDir};
use crate::step::Step;
use crate::upstream::MapModel;

/// What a pin of the installed set holds now, against what the state records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum PinState {
    /// The recorded object is pinned there.
    Live,
    /// Nothing is pinned there.
    Missing,
    /// Another object is pinned there.
    Other {
        /// Its id.
        id: u32,
    },
}

/// A map or program of the installed set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PinStatus {
    /// Its key (maps) or name (programs).
    pub name: String,
    /// Its pin under the pin root.
    pub pin: String,
    /// The id the state records.
    pub id: u32,
    /// What the pin holds now.
    pub state: PinState,
}

/// What an attachment of the installed set does now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum LinkState {
    /// The link is pinned, attached and runs the recorded program.
    Live,
    /// No link is pinned there (a restart attaches it again).
    Missing,
    /// The link is pinned but detached (its cgroup or device went away, or it was
    /// detached by hand).
    Detached,
    /// Held without a link at a hook the kernel answers no query for (a socket map
    /// before 5.19): whether the recorded program is there cannot be known; a
    /// restart attaches it again, which changes nothing where it is.
    Unknown,
    /// The link runs another program than the recorded one.
    RunsOther {
        /// The program it runs.
        prog: u32,
    },
}

/// An attachment of the installed set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkStatus {
    /// Its name.
    pub name: String,
    /// The program.
    pub program: String,
    /// Where it attaches.
    pub point: AttachPoint,
    /// Its link's pin (empty when it is held without a link).
    pub pin: String,
    /// The link id the state records; for an attachment held without a link, the
    /// id of the program recorded.
    pub id: u32,
    /// How it is held.
    #[serde(default)]
    pub hold: Hold,
    /// What it does now (held without a link: [`LinkState::Live`] while
    /// `BPF_PROG_QUERY` lists the recorded program at the hook,
    /// [`LinkState::Detached`] when it does not).
    pub state: LinkState,
}

/// The journal of an upgrade that has not finished.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JournalStatus {
    /// The transaction.
    pub tx: String,
    /// Identity of the set being installed.
    pub identity: String,
    /// Steps recorded as done, in order.
    pub done: Vec<Step>,
    /// A step recorded as started and not done.
    pub running: Option<Step>,
    /// Whether its process is gone: nobody holds the state's lock, so the upgrade is
    /// interrupted and waits for a recovery; `false` while an upgrade runs.
    pub interrupted: bool,
    /// Which way a recovery finishes it.
    pub recovery: Direction,
}

/// Everything `status` shows: the installed set against the live pins, and the
/// journal of an unfinished upgrade.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    /// The installed identity (`None`: nothing is installed).
    pub identity: Option<String>,
    /// The installed objects by name.
    pub objects: Vec<String>,
    /// Maps of the set.
    pub maps: Vec<PinStatus>,
    /// Programs of the set.
    pub programs: Vec<PinStatus>,
    /// Attachments of the set.
    pub links: Vec<LinkStatus>,
    /// The map specs of the snapshot kept for the next upgrade, by key.
    pub snapshot: Vec<String>,
    /// Pins under the pin root that the installed set does not record (an
    /// interrupted upgrade's temporary pins, or another set's).
    pub other_pins: Vec<String>,
    /// An unfinished upgrade.
    pub journal: Option<JournalStatus>,
    /// Whether a process holds the state's lock (a daemon, or an upgrade running).
    pub locked: bool,
}

/// A map of the installed set, opened for reading: its spec from the snapshot and
/// access to the live map.
#[derive(Debug, Clone)]
pub struct InspectedMap {
    /// Its spec as the snapshot keeps it (key and value layouts included).
    pub model: MapModel,
    /// The live map.
    pub access: Arc<dyn MapAccess>,
    /// Its id.
    pub id: u32,
}

/// Reads an installed set's state and its live pins without taking the lock.
#[derive(Debug)]
pub struct Inspector<K: Kernel> {
    kernel: K,
    dir: StateDir,
}

impl Inspector<RealKernel> {
    /// Opens the pin root `pin_root` (a directory on a bpffs) and the state directory
    /// `state_dir` for reading; a state directory that does not exist is a set that
    /// is not installed.
    ///
    /// # Errors
    /// The pin root is not on bpffs, or its manifest is unreadable.
    pub fn open(pin_root: &Path, state_dir: &Path) -> Result<Self, Error> {
        let kernel = RealKernel::open(pin_root, state_dir).map_err(|source| Error::Kernel {
            step: "inspect",
            what: format!("open pin root {}", pin_root.display()),
            source,
        })?;
        Ok(Self::with_kernel(kernel, state_dir))
    }
}

fn kerr(what: String) -> impl FnOnce(KernelError) -> Error {
    move |source| Error::Kernel {
        step: "inspect",
        what,
        source,
    }
}

impl<K: Kernel> Inspector<K> {
    /// Reads the state directory `state_dir` of a set in `kernel`.
    pub fn with_kernel(kernel: K, state_dir: &Path) -> Self {
        Self {
            kernel,
            dir: StateDir::existing(state_dir),
        }
    }

    /// The installed state, verified; `None` when nothing is installed.
    ///
    /// # Errors
    /// The state file is unreadable or fails its checksum.
    pub fn state(&self) -> Result<Option<State>, Error> {
        self.dir.read_state()
    }

    /// The journal of an unfinished upgrade, if any.
    ///
    /// # Errors
    /// The journal is unreadable or fails its checksum.
    pub fn journal(&self) -> Result<Option<Journal>, Error> {
        self.dir.read_journal()
    }

    /// Whether a process holds the state directory's lock.
    #[must_use]
    pub fn locked(&self) -> bool {
        StateLock::held_by_other(self.dir.path())
    }

    fn pin_state(&mut self, pin: &str, id: u32) -> Result<(PinState, Option<ObjRef>), Error> {
        let found = self
            .kernel
            .get(pin)
            .map_err(kerr(format!("open pin {pin}")))?;
        Ok(match found {
            None => (PinState::Missing, None),
            Some(r) if r.id == id => (PinState::Live, Some(r)),
            Some(r) => (PinState::Other { id: r.id }, Some(r)),
        })
    }

    /// The installed set against the live pins, and the journal.
    ///
    /// # Errors
    /// A state file is not trusted; a pin cannot be read.
    pub fn status(&mut self) -> Result<Status, Error> {
        let state = self.dir.read_state()?;
        let journal = self.dir.read_journal()?;
        let locked = self.locked();
        let mut status = Status {
            identity: state.as_ref().map(|s| s.identity.clone()),
            objects: state
                .as_ref()
                .map(|s| s.objects.iter().map(|o| o.name.clone()).collect())
                .unwrap_or_default(),
            maps: Vec::new(),
            programs: Vec::new(),
            links: Vec::new(),
            snapshot: state
                .as_ref()
                .map(|s| s.models.iter().map(|m| m.name.clone()).collect())
                .unwrap_or_default(),
            other_pins: Vec::new(),
            journal: journal.map(|j| journal_status(&j, locked)),
            locked,
        };
        let mut recorded = std::collections::BTreeSet::new();
        if let Some(s) = &state {
            for (list, pins) in [
                (&mut status.maps, &s.maps),
                (&mut status.programs, &s.programs),
            ] {
                for (name, p) in pins {
                    let (st, r) = self.pin_state(&p.pin, p.id)?;
                    if let Some(r) = r {
                        self.kernel.release(r);
                    }
                    recorded.insert(p.pin.clone());
                    list.push(PinStatus {
                        name: name.clone(),
                        pin: p.pin.clone(),
                        id: p.id,
                        state: st,
                    });
                }
            }
            for (name, l) in &s.links {
                recorded.insert(l.pin.clone());
                let (pinned, r) = self.pin_state(&l.pin, l.id)?;
                let state = match (pinned, r) {
                    (PinState::Missing, _) | (_, None) => LinkState::Missing,
                    (_, Some(r)) => {
                        let runs = self
                            .kernel
                            .link_program(r)
                            .map_err(kerr(format!("inspect link {}", l.pin)));
                        self.kernel.release(r);
                        match runs? {
                            None => LinkState::Detached,
                            Some(p) if p == l.prog => LinkState::Live,
                            Some(p) => LinkState::RunsOther { prog: p },
                        }
                    }
                };
                status.links.push(LinkStatus {
                    name: name.clone(),
                    program: l.attachment.program.clone(),
                    point: l.attachment.point.clone(),
                    pin: l.pin.clone(),
                    id: l.id,
                    hold: Hold::Link,
                    state,
                });
            }
            for (name, r) in &s.attached {
                let point = r
                    .attachment
                    .point
                    .on_map(|key| s.maps.get(key).map(|p| p.id));
                let state = match self.kernel.prog_query(&point) {
                    Ok((_, ids)) if ids.contains(&r.prog) => LinkState::Live,
                    Ok(_) => LinkState::Detached,
                    Err(KernelError::Unsupported { .. }) => LinkState::Unknown,
                    Err(e) => return Err(kerr(format!("query attachment {name}"))(e)),
                };
                status.links.push(LinkStatus {
                    name: name.clone(),
                    program: r.attachment.program.clone(),
                    point: r.attachment.point.clone(),
                    pin: String::new(),
                    id: r.prog,
                    hold: Hold::ProgAttach,
                    state,
                });
            }
        }
        status.other_pins = self
            .kernel
            .pins()
            .map_err(kerr("list pins".into()))?
            .into_iter()
            .filter(|p| !recorded.contains(p))
            .collect();
        Ok(status)
    }

    /// Opens the installed map of key `key` for reading, with its spec.
    ///
    /// # Errors
    /// [`Error::NoSuch`] when the set has no such map; [`Error::Stale`] when its pin
    /// is gone or holds another map than the state records (the spec would not
    /// describe it).
    pub fn map(&mut self, key: &str) -> Result<InspectedMap, Error> {
        let state = self
            .dir
            .read_state()?
            .ok_or_else(|| Error::Stale("nothing is installed".into()))?;
        let no_such = || Error::NoSuch {
            kind: "map",
            name: key.to_owned(),
        };
        let pinned = state.maps.get(key).ok_or_else(no_such)?;
        let model = state
            .models
            .iter()
            .find(|m| m.name == key)
            .cloned()
            .ok_or_else(no_such)?;
        let r = match self.pin_state(&pinned.pin, pinned.id)? {
            (PinState::Live, Some(r)) => r,
            (PinState::Other { id }, _) => {
                return Err(Error::Stale(format!(
                    "{} holds map {id}, the state records map {}",
                    pinned.pin, pinned.id
                )));
            }
            _ => return Err(Error::Stale(format!("{} is gone", pinned.pin))),
        };
        let access = self
            .kernel
            .map_access(r)
            .map_err(kerr(format!("open map {key}")))?;
        let g = access.geometry();
        if g.key_size != model.key_size as usize || g.value_size != model.value_size as usize {
            return Err(Error::Stale(format!(
                "map {key} has {}-byte keys and {}-byte values, its spec {} and {}",
                g.key_size, g.value_size, model.key_size, model.value_size
            )));
        }
        Ok(InspectedMap {
            model,
            access,
            id: r.id,
        })
    }
}

fn journal_status(j: &Journal, locked: bool) -> JournalStatus {
    let done: Vec<Step> = j
        .steps
        .iter()
        .filter(|(_, p)| *p == Phase::Done)
        .map(|(s, _)| *s)
        .collect();
    let running = j.steps.iter().map(|(s, _)| *s).find(|s| !done.contains(s));
    JournalStatus {
        tx: j.tx.clone(),
        identity: j.plan.identity.clone(),
        done,
        running,
        interrupted: !locked,
        recovery: j.recovery_direction(),
    }
}
