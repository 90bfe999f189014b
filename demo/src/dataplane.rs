//! Handles to the dataplane's maps and the daemon's work on them: reading what they
//! hold, applying a sync, reading what the programs wrote.

use std::collections::{BTreeMap, BTreeSet};
use std::os::fd::OwnedFd;

use handover_sys::{Bpf, Map, UpdateFlags};
use tracing::{debug, info, info_span};

use crate::config::Config;
use crate::layout::{
    BackendValue, ConnKey, EndpointKey, FrontendKey, Layout, LayoutError, ServiceValue,
    decode_connects, decode_id, encode_id, maps,
};
use crate::sync::{Live, Op, SyncPlan, plan};

/// A failure reading or writing the dataplane's maps.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DataplaneError {
    /// A map the daemon needs is not in the installed set.
    #[error("the installed dataplane has no map {map}")]
    MissingMap {
        /// The map.
        map: String,
    },
    /// A map operation failed.
    #[error("{what} map {map}")]
    Map {
        /// What was being done.
        what: &'static str,
        /// The map.
        map: String,
        /// The kernel's error.
        #[source]
        source: handover_sys::Error,
    },
    /// An entry does not have the layout of this dataplane version.
    #[error(transparent)]
    Layout(#[from] LayoutError),
}

/// A map's entries as (key, value) pairs.
type Entries = Vec<(Vec<u8>, Vec<u8>)>;

/// The dataplane's maps, open, with the layout of their version.
#[derive(Debug)]
pub struct Dataplane {
    maps: BTreeMap<String, Map>,
    layout: Layout,
}

impl Dataplane {
    /// Opens the maps `fds` (by name) of a dataplane with `layout`.
    ///
    /// # Errors
    /// The kernel does not describe a map (`BPF_OBJ_GET_INFO_BY_FD`).
    pub fn new(
        bpf: &Bpf,
        fds: BTreeMap<String, OwnedFd>,
        layout: Layout,
    ) -> Result<Self, DataplaneError> {
        let mut maps = BTreeMap::new();
        for (name, fd) in fds {
            let map = Map::new(bpf, fd).map_err(|source| DataplaneError::Map {
                what: "describing",
                map: name.clone(),
                source,
            })?;
            maps.insert(name, map);
        }
        Ok(Self::from_maps(maps, layout))
    }

    /// The dataplane of the open maps `maps` (by name) with `layout`.
    #[must_use]
    pub fn from_maps(maps: BTreeMap<String, Map>, layout: Layout) -> Self {
        Self { maps, layout }
    }

    /// The layout of the installed version.
    #[must_use]
    pub fn layout(&self) -> Layout {
        self.layout
    }

    /// The map `name`.
    ///
    /// # Errors
    /// The installed set has no such map.
    pub fn map(&self, name: &str) -> Result<&Map, DataplaneError> {
        self.maps
            .get(name)
            .ok_or_else(|| DataplaneError::MissingMap { map: name.into() })
    }

    /// Every map's name.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.maps.keys().map(String::as_str)
    }

    fn entries(&self, name: &str) -> Result<Entries, DataplaneError> {
        let dump = self
            .map(name)?
            .dump()
            .map_err(|source| DataplaneError::Map {
                what: "reading",
                map: name.into(),
                source,
            })?;
        Ok(dump.iter().map(|(k, v)| (k.to_vec(), v.to_vec())).collect())
    }

    /// What the daemon-written maps hold, and which backend uids have counters.
    ///
    /// # Errors
    /// A map cannot be read, or holds an entry of another layout.
    pub fn live(&self) -> Result<Live, DataplaneError> {
        let mut live = Live::default();
        for (k, v) in self.entries(maps::FRONTEND)? {
            if let Some(fk) = FrontendKey::decode(&k)? {
                live.frontends.insert(fk, decode_id(maps::FRONTEND, &v)?);
            }
        }
        for (k, v) in self.entries(maps::SERVICE)? {
            live.services
                .insert(decode_id(maps::SERVICE, &k)?, ServiceValue::decode(&v)?);
        }
        for (k, v) in self.entries(maps::ENDPOINT)? {
            live.endpoints
                .insert(EndpointKey::decode(&k)?, decode_id(maps::ENDPOINT, &v)?);
        }
        live.backends = self.backends()?;
        live.counted = self.connects()?.into_keys().collect();
        Ok(live)
    }

    /// The `backend` map.
    ///
    /// # Errors
    /// The map cannot be read, or holds an entry of another layout.
    pub fn backends(&self) -> Result<BTreeMap<u32, BackendValue>, DataplaneError> {
        self.entries(maps::BACKEND)?
            .into_iter()
            .map(|(k, v)| {
                Ok((
                    decode_id(maps::BACKEND, &k)?,
                    self.layout.decode_backend(&v)?,
                ))
            })
            .collect()
    }

    /// Connects the programs steered to each backend, by uid (`backend_conns`).
    ///
    /// # Errors
    /// The map cannot be read, or holds an entry of another layout.
    pub fn connects(&self) -> Result<BTreeMap<u32, u64>, DataplaneError> {
        self.entries(maps::BACKEND_CONNS)?
            .into_iter()
            .map(|(k, v)| Ok((decode_id(maps::BACKEND_CONNS, &k)?, decode_connects(&v)?)))
            .collect()
    }

    /// The open connections the programs track (`conns` keys).
    ///
    /// # Errors
    /// The map cannot be read, or holds an entry of another layout.
    pub fn conns(&self) -> Result<BTreeSet<ConnKey>, DataplaneError> {
        self.entries(maps::CONNS)?
            .into_iter()
            .map(|(k, _)| Ok(self.layout.decode_conn_key(&k)?))
            .collect()
    }

    /// Applies `ops` in order.
    ///
    /// # Errors
    /// A write fails; the operations before it are applied (a later sync completes the
    /// rest, as every operation is idempotent).
    pub fn apply(&self, ops: &[Op]) -> Result<(), DataplaneError> {
        for op in ops {
            let map = self.map(op.map())?;
            let result = match op {
                Op::PutBackend(uid, v) => map.update(
                    &encode_id(*uid),
                    &self.layout.encode_backend(v),
                    UpdateFlags::ANY,
                ),
                Op::PutEndpoint(k, uid) => {
                    map.update(&k.encode(), &encode_id(*uid), UpdateFlags::ANY)
                }
                Op::PutService(sid, v) => {
                    map.update(&encode_id(*sid), &v.encode(), UpdateFlags::ANY)
                }
                Op::PutFrontend(k, sid) => {
                    map.update(&k.encode(), &encode_id(*sid), UpdateFlags::ANY)
                }
                Op::DeleteFrontend(k) => map.delete(&k.encode()).map(drop),
                Op::DeleteEndpoint(k) => map.delete(&k.encode()).map(drop),
                Op::DeleteService(sid) | Op::DeleteBackend(sid) => {
                    map.delete(&encode_id(*sid)).map(drop)
                }
            };
            debug!(?op, "map write");
            result.map_err(|source| DataplaneError::Map {
                what: if op.is_delete() {
                    "deleting from"
                } else {
                    "writing"
                },
                map: op.map().into(),
                source,
            })?;
        }
        Ok(())
    }

    /// Brings the daemon-written maps in line with `config`: reads them, plans the
    /// writes ([`plan`]) and applies them. Returns the plan.
    ///
    /// # Errors
    /// As [`Dataplane::live`] and [`Dataplane::apply`].
    pub fn sync(&self, config: &Config) -> Result<SyncPlan, DataplaneError> {
        let _span = info_span!("sync", services = config.services.len()).entered();
        let live = self.live()?;
        let p = plan(&live, config);
        self.apply(&p.ops)?;
        for (map, c) in &p.counts {
            info!(
                map,
                written = c.written,
                deleted = c.deleted,
                kept = c.kept,
                "synced"
            );
        }
        Ok(p)
    }
}
