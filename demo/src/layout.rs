//! The byte layouts of the dataplane's map keys and values (programs/dataplane/vN.c),
//! and which version an object is, read from the sizes its maps declare.
//!
//! Addresses are kept in network byte order (the bytes of the address), ports and every
//! other integer in host order, as the programs compare them.

use std::net::{Ipv4Addr, SocketAddrV4};

use handover_loader::Object;

use crate::config::PRIO_COUNT;

/// `IPPROTO_TCP`, the protocol of every frontend key.
pub const IPPROTO_TCP: u16 = 6;

/// The dataplane's maps, by name in the object.
pub mod maps {
    /// (VIP, port, protocol) to service id; written by the daemon.
    pub const FRONTEND: &str = "frontend";
    /// Service id to endpoint counts, policy and ports; written by the daemon.
    pub const SERVICE: &str = "service";
    /// (service id, priority, index) to backend uid; written by the daemon.
    pub const ENDPOINT: &str = "endpoint";
    /// Backend uid to address, port, weight; written by the daemon.
    pub const BACKEND: &str = "backend";
    /// Backend uid to connects made; written by the programs.
    pub const BACKEND_CONNS: &str = "backend_conns";
    /// One entry per open connection; written by the programs.
    pub const CONNS: &str = "conns";
    /// The keys the programs deleted from `conns` (v2 on): the engine's tombstones.
    pub const CONNS_TOMBSTONES: &str = "conns_tombstones";
    /// The lb policy programs (tail calls).
    pub const LB_POLICIES: &str = "lb_policies";
}

/// Which layout variant each changing map has: the versions of the dataplane differ
/// in these, and nothing else the daemon writes or reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    /// The backend value ends with a `flags` word (v2).
    pub backend_flags: bool,
    /// The per-connection key has 32-bit ports (v2) instead of 16-bit ones.
    pub wide_conn_ports: bool,
}

/// An object whose maps are not a dataplane version this daemon knows.
#[derive(Debug, thiserror::Error)]
#[error("object is not a mesh dataplane this daemon knows: map {map}: {reason}")]
pub struct LayoutError {
    /// The map.
    pub map: String,
    /// What differs.
    pub reason: String,
}

impl Layout {
    /// The layout of dataplane v1.
    pub const V1: Self = Self {
        backend_flags: false,
        wide_conn_ports: false,
    };

    /// The layout of the dataplane `object`, from the sizes its maps declare.
    ///
    /// # Errors
    /// A map is missing or has a size no known version has.
    pub fn of(object: &Object<'_>) -> Result<Self, LayoutError> {
        let size = |map: &str, key: bool| {
            object
                .map(map)
                .map(|m| if key { m.key_size } else { m.value_size })
                .ok_or_else(|| LayoutError {
                    map: map.to_owned(),
                    reason: "missing".into(),
                })
        };
        let fixed = [
            (maps::FRONTEND, true, FRONTEND_KEY),
            (maps::FRONTEND, false, 4),
            (maps::SERVICE, true, 4),
            (maps::SERVICE, false, SERVICE_VALUE),
            (maps::ENDPOINT, true, ENDPOINT_KEY),
            (maps::ENDPOINT, false, 4),
            (maps::BACKEND, true, 4),
            (maps::BACKEND_CONNS, true, 4),
        ];
        for (map, key, want) in fixed {
            let got = size(map, key)?;
            if got != want {
                return Err(LayoutError {
                    map: map.to_owned(),
                    reason: format!(
                        "{} is {got} bytes, expected {want}",
                        if key { "key" } else { "value" }
                    ),
                });
            }
        }
        let backend_flags = match size(maps::BACKEND, false)? {
            8 => false,
            12 => true,
            n => {
                return Err(LayoutError {
                    map: maps::BACKEND.into(),
                    reason: format!("value is {n} bytes, expected 8 (v1) or 12 (v2)"),
                });
            }
        };
        let wide_conn_ports = match size(maps::CONNS, true)? {
            12 => false,
            16 => true,
            n => {
                return Err(LayoutError {
                    map: maps::CONNS.into(),
                    reason: format!("key is {n} bytes, expected 12 (v1) or 16 (v2)"),
                });
            }
        };
        Ok(Self {
            backend_flags,
            wide_conn_ports,
        })
    }

    /// Size of a backend value.
    #[must_use]
    pub fn backend_value_size(self) -> usize {
        if self.backend_flags { 12 } else { 8 }
    }

    /// Size of a per-connection key.
    #[must_use]
    pub fn conn_key_size(self) -> usize {
        if self.wide_conn_ports { 16 } else { 12 }
    }

    /// Encodes a backend value.
    #[must_use]
    pub fn encode_backend(self, b: &BackendValue) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.backend_value_size());
        out.extend_from_slice(&b.address.octets());
        out.extend_from_slice(&b.port.to_ne_bytes());
        out.extend_from_slice(&b.weight.to_ne_bytes());
        if self.backend_flags {
            out.extend_from_slice(&b.flags.to_ne_bytes());
        }
        out
    }

    /// Decodes a backend value.
    ///
    /// # Errors
    /// The value has the wrong size.
    pub fn decode_backend(self, v: &[u8]) -> Result<BackendValue, LayoutError> {
        let w = Words::new(maps::BACKEND, v, self.backend_value_size())?;
        Ok(BackendValue {
            address: w.addr(0),
            port: w.u16(4),
            weight: w.u16(6),
            flags: if self.backend_flags { w.u32(8) } else { 0 },
        })
    }

    /// Decodes a per-connection key.
    ///
    /// # Errors
    /// The key has the wrong size.
    pub fn decode_conn_key(self, k: &[u8]) -> Result<ConnKey, LayoutError> {
        let w = Words::new(maps::CONNS, k, self.conn_key_size())?;
        let (src_port, dst_port) = if self.wide_conn_ports {
            (w.u32(8), w.u32(12))
        } else {
            (u32::from(w.u16(8)), u32::from(w.u16(10)))
        };
        let port = |p: u32| {
            u16::try_from(p).map_err(|_| LayoutError {
                map: maps::CONNS.into(),
                reason: format!("port {p} does not fit 16 bits"),
            })
        };
        Ok(ConnKey {
            src: SocketAddrV4::new(w.addr(0), port(src_port)?),
            dst: SocketAddrV4::new(w.addr(4), port(dst_port)?),
        })
    }
}

/// Key size of `frontend`.
const FRONTEND_KEY: u32 = 8;
/// Value size of `service`.
const SERVICE_VALUE: u32 = 4 * PRIO_COUNT + 8;
/// Key size of `endpoint`.
const ENDPOINT_KEY: u32 = 12;

/// A fixed-size record read by offset.
struct Words<'a>(&'a [u8]);

impl<'a> Words<'a> {
    fn new(map: &str, bytes: &'a [u8], size: usize) -> Result<Self, LayoutError> {
        if bytes.len() == size {
            Ok(Self(bytes))
        } else {
            Err(LayoutError {
                map: map.to_owned(),
                reason: format!("record of {} bytes, expected {size}", bytes.len()),
            })
        }
    }

    fn array<const N: usize>(&self, at: usize) -> [u8; N] {
        let mut out = [0; N];
        if let Some(src) = self.0.get(at..at + N) {
            out.copy_from_slice(src);
        }
        out
    }

    fn u16(&self, at: usize) -> u16 {
        u16::from_ne_bytes(self.array(at))
    }

    fn u32(&self, at: usize) -> u32 {
        u32::from_ne_bytes(self.array(at))
    }

    fn u64(&self, at: usize) -> u64 {
        u64::from_ne_bytes(self.array(at))
    }

    fn addr(&self, at: usize) -> Ipv4Addr {
        Ipv4Addr::from(self.array::<4>(at))
    }
}

/// A `frontend` key: the service's VIP and port (protocol TCP).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FrontendKey {
    /// The VIP.
    pub vip: Ipv4Addr,
    /// The port.
    pub port: u16,
}

impl FrontendKey {
    /// The key's bytes.
    #[must_use]
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(8);
        out.extend_from_slice(&self.vip.octets());
        out.extend_from_slice(&self.port.to_ne_bytes());
        out.extend_from_slice(&IPPROTO_TCP.to_ne_bytes());
        out
    }

    /// Decodes a key; `None` for another protocol than TCP (not written by this daemon).
    ///
    /// # Errors
    /// The key has the wrong size.
    pub fn decode(k: &[u8]) -> Result<Option<Self>, LayoutError> {
        let w = Words::new(maps::FRONTEND, k, 8)?;
        Ok((w.u16(6) == IPPROTO_TCP).then(|| Self {
            vip: w.addr(0),
            port: w.u16(4),
        }))
    }
}

/// A `service` value.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ServiceValue {
    /// Endpoints per priority level.
    pub endpoint_count: [u32; PRIO_COUNT as usize],
    /// The policy's slot in `lb_policies`.
    pub lb_policy: u32,
    /// The port clients connect to.
    pub service_port: u16,
    /// The port backends are reached on (0: their own).
    pub target_port: u16,
}

impl ServiceValue {
    /// The value's bytes.
    #[must_use]
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(24);
        for c in self.endpoint_count {
            out.extend_from_slice(&c.to_ne_bytes());
        }
        out.extend_from_slice(&self.lb_policy.to_ne_bytes());
        out.extend_from_slice(&self.service_port.to_ne_bytes());
        out.extend_from_slice(&self.target_port.to_ne_bytes());
        out
    }

    /// Decodes a value.
    ///
    /// # Errors
    /// The value has the wrong size.
    pub fn decode(v: &[u8]) -> Result<Self, LayoutError> {
        let w = Words::new(maps::SERVICE, v, 24)?;
        let mut endpoint_count = [0; PRIO_COUNT as usize];
        for (i, c) in endpoint_count.iter_mut().enumerate() {
            *c = w.u32(4 * i);
        }
        Ok(Self {
            endpoint_count,
            lb_policy: w.u32(16),
            service_port: w.u16(20),
            target_port: w.u16(22),
        })
    }
}

/// An `endpoint` key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EndpointKey {
    /// The service.
    pub service_id: u32,
    /// The priority level.
    pub prio: u32,
    /// The index within the level.
    pub index: u32,
}

impl EndpointKey {
    /// The key's bytes.
    #[must_use]
    pub fn encode(&self) -> Vec<u8> {
        [self.service_id, self.prio, self.index]
            .iter()
            .flat_map(|w| w.to_ne_bytes())
            .collect()
    }

    /// Decodes a key.
    ///
    /// # Errors
    /// The key has the wrong size.
    pub fn decode(k: &[u8]) -> Result<Self, LayoutError> {
        let w = Words::new(maps::ENDPOINT, k, 12)?;
        Ok(Self {
            service_id: w.u32(0),
            prio: w.u32(4),
            index: w.u32(8),
        })
    }
}

/// A `backend` value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BackendValue {
    /// The address.
    pub address: Ipv4Addr,
    /// The port.
    pub port: u16,
    /// The weight.
    pub weight: u16,
    /// Flags (v2 only; 0 in v1).
    pub flags: u32,
}

/// A `conns` key: one open connection, from the client's side.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConnKey {
    /// The client's address.
    pub src: SocketAddrV4,
    /// The backend's address.
    pub dst: SocketAddrV4,
}

/// A 4-byte id (service id, backend uid) as a map key or value.
#[must_use]
pub fn encode_id(id: u32) -> [u8; 4] {
    id.to_ne_bytes()
}

/// Decodes a 4-byte id of `map`.
///
/// # Errors
/// The record has the wrong size.
pub fn decode_id(map: &str, v: &[u8]) -> Result<u32, LayoutError> {
    Ok(Words::new(map, v, 4)?.u32(0))
}

/// Decodes a `backend_conns` value: the connects made to the backend.
///
/// # Errors
/// The value has the wrong size.
pub fn decode_connects(v: &[u8]) -> Result<u64, LayoutError> {
    Ok(Words::new(maps::BACKEND_CONNS, v, 8)?.u64(0))
}

#[cfg(test)]
#[expect(
    clippy::indexing_slicing,
    reason = "tests index the records they built"
)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_at_the_c_offsets() {
        let s = ServiceValue {
            endpoint_count: [3, 0, 1, 0],
            lb_policy: 1,
            service_port: 80,
            target_port: 0,
        };
        let bytes = s.encode();
        assert_eq!(bytes.len(), 24);
        assert_eq!(bytes[16..20], 1u32.to_ne_bytes());
        assert_eq!(ServiceValue::decode(&bytes).unwrap(), s);

        let f = FrontendKey {
            vip: Ipv4Addr::new(127, 100, 0, 1),
            port: 80,
        };
        let bytes = f.encode();
        assert_eq!(bytes[..4], [127, 100, 0, 1]);
        assert_eq!(FrontendKey::decode(&bytes).unwrap(), Some(f));

        let b = BackendValue {
            address: Ipv4Addr::new(127, 0, 1, 1),
            port: 8080,
            weight: 2,
            flags: 0,
        };
        for layout in [
            Layout::V1,
            Layout {
                backend_flags: true,
                wide_conn_ports: true,
            },
        ] {
            let bytes = layout.encode_backend(&b);
            assert_eq!(bytes.len(), layout.backend_value_size());
            assert_eq!(layout.decode_backend(&bytes).unwrap(), b);
        }
    }

    #[test]
    fn a_record_of_the_wrong_size_is_refused_with_the_map_name() {
        let e = Layout::V1.decode_backend(&[0; 12]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "object is not a mesh dataplane this daemon knows: map backend: record of 12 bytes, expected 8"
        );
    }

    #[test]
    fn conn_keys_decode_both_port_widths() {
        let mut narrow = vec![127, 0, 0, 1, 127, 0, 1, 2];
        narrow.extend_from_slice(&40000u16.to_ne_bytes());
        narrow.extend_from_slice(&8080u16.to_ne_bytes());
        let mut wide = narrow[..8].to_vec();
        wide.extend_from_slice(&40000u32.to_ne_bytes());
        wide.extend_from_slice(&8080u32.to_ne_bytes());
        let want = ConnKey {
            src: "127.0.0.1:40000".parse().unwrap(),
            dst: "127.0.1.2:8080".parse().unwrap(),
        };
        assert_eq!(Layout::V1.decode_conn_key(&narrow).unwrap(), want);
        let v2 = Layout {
            backend_flags: true,
            wide_conn_ports: true,
        };
        assert_eq!(v2.decode_conn_key(&wide).unwrap(), want);
    }
}
