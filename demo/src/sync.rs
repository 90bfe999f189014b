//! Re-syncing the daemon-written maps with the configuration: what to add, change and
//! delete, computed as a value ([`plan`]) from what the maps hold ([`Live`]) and what
//! the configuration asks for, so that a restart keeps every entry that is still right
//! and never flushes a map.
//!
//! The operations come in an order that keeps every connect steered while they are
//! applied one by one: backends before the endpoints that name them, endpoint slots
//! before the counts that make them visible, counts lowered before the slots past them
//! are deleted, a frontend deleted before its service, backends deleted last.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use crate::config::{Config, PRIO_COUNT};
use crate::layout::{BackendValue, EndpointKey, FrontendKey, ServiceValue};

/// What the daemon-written maps hold, decoded.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Live {
    /// `frontend`.
    pub frontends: BTreeMap<FrontendKey, u32>,
    /// `service`.
    pub services: BTreeMap<u32, ServiceValue>,
    /// `endpoint`.
    pub endpoints: BTreeMap<EndpointKey, u32>,
    /// `backend`.
    pub backends: BTreeMap<u32, BackendValue>,
    /// Backend uids the programs have counted connects for (`backend_conns`): never
    /// given to another backend, so a counter always belongs to one backend.
    pub counted: BTreeSet<u32>,
}

/// One map write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// Insert or overwrite a backend.
    PutBackend(u32, BackendValue),
    /// Insert or overwrite an endpoint slot.
    PutEndpoint(EndpointKey, u32),
    /// Insert or overwrite a service.
    PutService(u32, ServiceValue),
    /// Insert a frontend.
    PutFrontend(FrontendKey, u32),
    /// Delete a frontend.
    DeleteFrontend(FrontendKey),
    /// Delete an endpoint slot.
    DeleteEndpoint(EndpointKey),
    /// Delete a service.
    DeleteService(u32),
    /// Delete a backend.
    DeleteBackend(u32),
}

impl Op {
    /// The map the operation writes.
    #[must_use]
    pub fn map(&self) -> &'static str {
        use crate::layout::maps;
        match self {
            Op::PutBackend(..) | Op::DeleteBackend(_) => maps::BACKEND,
            Op::PutEndpoint(..) | Op::DeleteEndpoint(_) => maps::ENDPOINT,
            Op::PutService(..) | Op::DeleteService(_) => maps::SERVICE,
            Op::PutFrontend(..) | Op::DeleteFrontend(_) => maps::FRONTEND,
        }
    }

    /// Whether it deletes.
    #[must_use]
    pub fn is_delete(&self) -> bool {
        matches!(
            self,
            Op::DeleteBackend(_)
                | Op::DeleteEndpoint(_)
                | Op::DeleteService(_)
                | Op::DeleteFrontend(_)
        )
    }
}

/// What a sync did to one map.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct MapCounts {
    /// Entries written (new or changed).
    pub written: usize,
    /// Entries deleted.
    pub deleted: usize,
    /// Entries left as they were.
    pub kept: usize,
}

/// The result of [`plan`]: the operations and the ids given to services and backends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyncPlan {
    /// The writes, in the order to apply them.
    pub ops: Vec<Op>,
    /// Service id of every configured service, by VIP and port.
    pub service_ids: BTreeMap<(Ipv4Addr, u16), u32>,
    /// Backend uid of every configured backend, by address and port.
    pub backend_uids: BTreeMap<(Ipv4Addr, u16), u32>,
    /// Per map: entries written, deleted and kept.
    pub counts: BTreeMap<&'static str, MapCounts>,
}

/// The writes that turn `live` into what `config` asks for, keeping every entry that is
/// already right (ids of existing services and backends are kept; new ones get ids
/// never used before).
#[must_use]
pub fn plan(live: &Live, config: &Config) -> SyncPlan {
    let mut ops = Vec::new();

    // Backends: existing ones keep their uid.
    let mut uid_by_addr: BTreeMap<(Ipv4Addr, u16), u32> = BTreeMap::new();
    for (&uid, b) in &live.backends {
        uid_by_addr.entry((b.address, b.port)).or_insert(uid);
    }
    let mut next_uid = live
        .backends
        .keys()
        .chain(&live.counted)
        .max()
        .map_or(1, |m| m.saturating_add(1));
    let mut backend_uids = BTreeMap::new();
    let mut wanted_backends: BTreeMap<u32, BackendValue> = BTreeMap::new();
    for b in config.services.iter().flat_map(|s| &s.backends) {
        let addr = (b.address, b.port);
        if backend_uids.contains_key(&addr) {
            continue;
        }
        let uid = *uid_by_addr.entry(addr).or_insert_with(|| {
            let uid = next_uid;
            next_uid = next_uid.saturating_add(1);
            uid
        });
        backend_uids.insert(addr, uid);
        let value = BackendValue {
            address: b.address,
            port: b.port,
            weight: b.weight,
            flags: 0,
        };
        wanted_backends.insert(uid, value);
        if live.backends.get(&uid) != Some(&value) {
            ops.push(Op::PutBackend(uid, value));
        }
    }

    // Services: existing ones (a frontend naming a live service) keep their id.
    let mut next_sid = live
        .services
        .keys()
        .chain(live.frontends.values())
        .max()
        .map_or(1, |m| m.saturating_add(1));
    let mut service_ids = BTreeMap::new();
    let mut kept_slots: BTreeSet<EndpointKey> = BTreeSet::new();
    let mut service_ops = Vec::new();
    let mut frontend_ops = Vec::new();
    for s in &config.services {
        let fk = FrontendKey {
            vip: s.vip,
            port: s.port,
        };
        let sid = match live.frontends.get(&fk) {
            Some(&sid) if live.services.contains_key(&sid) => sid,
            _ => {
                let sid = next_sid;
                next_sid = next_sid.saturating_add(1);
                sid
            }
        };
        service_ids.insert((s.vip, s.port), sid);
        let mut value = ServiceValue {
            lb_policy: s.lb_policy.slot(),
            service_port: s.port,
            target_port: s.target_port,
            ..ServiceValue::default()
        };
        for prio in 0..PRIO_COUNT {
            let desired: Vec<u32> = s
                .backends
                .iter()
                .filter(|b| b.priority == prio)
                .filter_map(|b| backend_uids.get(&(b.address, b.port)).copied())
                .collect();
            let count = live
                .services
                .get(&sid)
                .and_then(|v| v.endpoint_count.get(prio as usize).copied())
                .unwrap_or(0);
            let current: Vec<Option<u32>> = (0..count)
                .map(|index| {
                    live.endpoints
                        .get(&EndpointKey {
                            service_id: sid,
                            prio,
                            index,
                        })
                        .copied()
                })
                .collect();
            let slots = arrange(&current, &desired);
            for (index, &uid) in (0..).zip(&slots) {
                let key = EndpointKey {
                    service_id: sid,
                    prio,
                    index,
                };
                kept_slots.insert(key);
                if live.endpoints.get(&key) != Some(&uid) {
                    ops.push(Op::PutEndpoint(key, uid));
                }
            }
            if let Some(c) = value.endpoint_count.get_mut(prio as usize) {
                *c = u32::try_from(slots.len()).unwrap_or(u32::MAX);
            }
        }
        if live.services.get(&sid) != Some(&value) {
            service_ops.push(Op::PutService(sid, value));
        }
        if live.frontends.get(&fk) != Some(&sid) {
            frontend_ops.push(Op::PutFrontend(fk, sid));
        }
    }
    ops.extend(service_ops);
    ops.extend(frontend_ops);

    let wanted_sids: BTreeSet<u32> = service_ids.values().copied().collect();
    for (fk, sid) in &live.frontends {
        if service_ids.get(&(fk.vip, fk.port)) != Some(sid) {
            ops.push(Op::DeleteFrontend(*fk));
        }
    }
    for key in live.endpoints.keys() {
        if !kept_slots.contains(key) {
            ops.push(Op::DeleteEndpoint(*key));
        }
    }
    for sid in live.services.keys() {
        if !wanted_sids.contains(sid) {
            ops.push(Op::DeleteService(*sid));
        }
    }
    for uid in live.backends.keys() {
        if !wanted_backends.contains_key(uid) {
            ops.push(Op::DeleteBackend(*uid));
        }
    }

    let mut counts: BTreeMap<&'static str, MapCounts> = BTreeMap::new();
    for op in &ops {
        let c = counts.entry(op.map()).or_default();
        if op.is_delete() {
            c.deleted += 1;
        } else {
            c.written += 1;
        }
    }
    let live_len = [
        (crate::layout::maps::FRONTEND, live.frontends.len()),
        (crate::layout::maps::SERVICE, live.services.len()),
        (crate::layout::maps::ENDPOINT, live.endpoints.len()),
        (crate::layout::maps::BACKEND, live.backends.len()),
    ];
    for (map, len) in live_len {
        let c = counts.entry(map).or_default();
        // Entries touched by neither a write of a live key nor a delete.
        let overwritten = ops
            .iter()
            .filter(|op| op.map() == map && !op.is_delete() && live_has(live, op))
            .count();
        c.kept = len.saturating_sub(c.deleted + overwritten);
    }
    SyncPlan {
        ops,
        service_ids,
        backend_uids,
        counts,
    }
}

fn live_has(live: &Live, op: &Op) -> bool {
    match op {
        Op::PutBackend(uid, _) => live.backends.contains_key(uid),
        Op::PutEndpoint(key, _) => live.endpoints.contains_key(key),
        Op::PutService(sid, _) => live.services.contains_key(sid),
        Op::PutFrontend(fk, _) => live.frontends.contains_key(fk),
        _ => false,
    }
}

/// The endpoint slots of one service and priority: `current` (slot contents, `None`
/// for a missing entry) rearranged to hold exactly `desired`, moving as few slots as
/// possible. Backends still wanted stay in their slot; a slot freed by a removed
/// backend takes a new backend, or else the one in the last slot, so the slots stay
/// dense from 0.
#[must_use]
pub fn arrange(current: &[Option<u32>], desired: &[u32]) -> Vec<u32> {
    let want: BTreeSet<u32> = desired.iter().copied().collect();
    let mut seen = BTreeSet::new();
    let mut slots: Vec<Option<u32>> = current
        .iter()
        .map(|s| s.filter(|uid| want.contains(uid) && seen.insert(*uid)))
        .collect();
    // New backends in the configuration's order.
    let mut added = BTreeSet::new();
    let adds: Vec<u32> = desired
        .iter()
        .copied()
        .filter(|uid| !seen.contains(uid) && added.insert(*uid))
        .collect();
    let mut adds = adds.into_iter();
    let mut i = 0;
    loop {
        while slots.last() == Some(&None) {
            slots.pop();
        }
        if i >= slots.len() {
            break;
        }
        if slots.get(i) == Some(&None) {
            let fill = adds.next().or_else(|| slots.pop().flatten());
            if let Some(slot) = slots.get_mut(i) {
                *slot = fill;
            } else if let Some(uid) = fill {
                // The slot popped was this one's only successor: it moves here.
                slots.push(Some(uid));
            }
        }
        i += 1;
    }
    let mut out: Vec<u32> = slots.into_iter().flatten().collect();
    out.extend(adds);
    out
}

#[cfg(test)]
#[expect(clippy::indexing_slicing, reason = "tests index the plans they built")]
mod tests {
    use super::*;
    use crate::config::{Backend, LbPolicy, Service};

    #[test]
    fn arrange_keeps_slots_still_wanted_and_fills_holes() {
        // Nothing changes.
        assert_eq!(arrange(&[Some(1), Some(2)], &[1, 2]), vec![1, 2]);
        // Order of the config does not move existing slots.
        assert_eq!(arrange(&[Some(1), Some(2)], &[2, 1]), vec![1, 2]);
        // A new backend is appended.
        assert_eq!(arrange(&[Some(1), Some(2)], &[1, 2, 3]), vec![1, 2, 3]);
        // A removed backend's slot takes a new one.
        assert_eq!(
            arrange(&[Some(1), Some(2), Some(3)], &[1, 3, 4]),
            vec![1, 4, 3]
        );
        // Or the last one, when nothing is new.
        assert_eq!(arrange(&[Some(1), Some(2), Some(3)], &[1, 3]), vec![1, 3]);
        assert_eq!(arrange(&[Some(1), Some(2), Some(3)], &[3]), vec![3]);
        assert_eq!(arrange(&[Some(1), Some(2), Some(3)], &[2]), vec![2]);
        // Holes and duplicates of a damaged map are repaired.
        assert_eq!(arrange(&[None, Some(2), Some(2)], &[2, 5]), vec![5, 2]);
        assert_eq!(arrange(&[Some(1)], &[]), Vec::<u32>::new());
    }

    #[test]
    fn arrange_always_yields_exactly_the_desired_set() {
        // Every current arrangement of up to 4 slots over uids 1..=5 against every
        // desired subset of 1..=5.
        for code in 0..(6u32.pow(4)) {
            let current: Vec<Option<u32>> = (0..4)
                .map(|d| (code / 6u32.pow(d)) % 6)
                .map(|v| (v != 0).then_some(v))
                .collect();
            for mask in 0..32u32 {
                let desired: Vec<u32> = (1..=5).filter(|u| mask & (1 << (u - 1)) != 0).collect();
                let out = arrange(&current, &desired);
                let mut sorted = out.clone();
                sorted.sort_unstable();
                assert_eq!(sorted, desired, "{current:?} -> {desired:?} gave {out:?}");
                // A wanted backend in a slot below the new length, seen there first,
                // stays in that slot.
                for (i, slot) in current.iter().enumerate() {
                    if let Some(uid) = slot {
                        let first = current.iter().position(|s| s == slot) == Some(i);
                        if first && desired.contains(uid) && i < out.len() {
                            assert_eq!(out[i], *uid, "{current:?} -> {desired:?} moved {uid}");
                        }
                    }
                }
            }
        }
    }

    fn backend(name: &str, last: u8, priority: u32) -> Backend {
        Backend {
            name: name.into(),
            address: Ipv4Addr::new(127, 0, 1, last),
            port: 8080,
            weight: 1,
            priority,
        }
    }

    fn config(backends: Vec<Backend>) -> Config {
        Config {
            services: vec![Service {
                name: "web".into(),
                vip: Ipv4Addr::new(127, 100, 0, 1),
                port: 80,
                lb_policy: LbPolicy::RoundRobin,
                target_port: 0,
                backends,
            }],
        }
    }

    /// Applies ops to a live state, as the kernel maps would.
    fn apply(live: &mut Live, ops: &[Op]) {
        for op in ops {
            match *op {
                Op::PutBackend(u, v) => {
                    live.backends.insert(u, v);
                }
                Op::PutEndpoint(k, u) => {
                    live.endpoints.insert(k, u);
                }
                Op::PutService(s, v) => {
                    live.services.insert(s, v);
                }
                Op::PutFrontend(f, s) => {
                    live.frontends.insert(f, s);
                }
                Op::DeleteFrontend(f) => {
                    live.frontends.remove(&f);
                }
                Op::DeleteEndpoint(k) => {
                    live.endpoints.remove(&k);
                }
                Op::DeleteService(s) => {
                    live.services.remove(&s);
                }
                Op::DeleteBackend(u) => {
                    live.backends.remove(&u);
                }
            }
        }
    }

    #[test]
    fn a_sync_from_empty_then_again_changes_nothing() {
        let c = config(vec![
            backend("a", 1, 0),
            backend("b", 2, 0),
            backend("c", 3, 1),
        ]);
        let mut live = Live::default();
        let p = plan(&live, &c);
        apply(&mut live, &p.ops);
        assert_eq!(live.backends.len(), 3);
        assert_eq!(live.endpoints.len(), 3);
        let sid = p.service_ids[&(Ipv4Addr::new(127, 100, 0, 1), 80)];
        assert_eq!(live.services[&sid].endpoint_count, [2, 1, 0, 0]);
        assert_eq!(live.services[&sid].lb_policy, 1);
        let again = plan(&live, &c);
        assert!(again.ops.is_empty(), "{:?}", again.ops);
        assert_eq!(again.counts["endpoint"].kept, 3);
        assert_eq!(again.service_ids, p.service_ids);
        assert_eq!(again.backend_uids, p.backend_uids);
    }

    #[test]
    fn a_changed_config_adds_and_deletes_and_keeps_the_rest() {
        let mut live = Live::default();
        let first = plan(
            &live,
            &config(vec![
                backend("a", 1, 0),
                backend("b", 2, 0),
                backend("c", 3, 0),
            ]),
        );
        apply(&mut live, &first.ops);
        live.counted.insert(9); // a uid the programs counted: never reused
        let second = plan(
            &live,
            &config(vec![
                backend("a", 1, 0),
                backend("c", 3, 0),
                backend("d", 4, 0),
            ]),
        );
        let b_uid = first.backend_uids[&(Ipv4Addr::new(127, 0, 1, 2), 8080)];
        let d_uid = second.backend_uids[&(Ipv4Addr::new(127, 0, 1, 4), 8080)];
        assert_eq!(d_uid, 10);
        // d takes b's slot, then b is deleted; a and c are not touched.
        assert_eq!(
            second.ops,
            vec![
                Op::PutBackend(
                    d_uid,
                    BackendValue {
                        address: Ipv4Addr::new(127, 0, 1, 4),
                        port: 8080,
                        weight: 1,
                        flags: 0
                    }
                ),
                Op::PutEndpoint(
                    EndpointKey {
                        service_id: 1,
                        prio: 0,
                        index: 1
                    },
                    d_uid
                ),
                Op::DeleteBackend(b_uid),
            ]
        );
        assert_eq!(second.counts["backend"].kept, 2);
        apply(&mut live, &second.ops);
        // Shrinking: the count goes down before the slot past it is deleted.
        let third = plan(&live, &config(vec![backend("a", 1, 0)]));
        let count_at = third
            .ops
            .iter()
            .position(|o| matches!(o, Op::PutService(..)))
            .unwrap();
        let delete_at = third
            .ops
            .iter()
            .position(|o| matches!(o, Op::DeleteEndpoint(_)))
            .unwrap();
        assert!(count_at < delete_at, "{:?}", third.ops);
        apply(&mut live, &third.ops);
        assert_eq!(live.endpoints.len(), 1);
        assert_eq!(live.backends.len(), 1);
        // Every service gone: frontend first, then endpoints, service, backends.
        let last = plan(&live, &Config { services: vec![] });
        assert!(matches!(last.ops[0], Op::DeleteFrontend(_)));
        apply(&mut live, &last.ops);
        assert_eq!(
            live,
            Live {
                counted: live.counted.clone(),
                ..Live::default()
            }
        );
    }
}
