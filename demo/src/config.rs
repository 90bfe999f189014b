//! The daemon's configuration file: the services and their backends, the stand-in for
//! what a control plane (istiod for Kmesh) delivers.
//!
//! JSON:
//!
//! ```json
//! {
//!   "services": [
//!     {
//!       "name": "web",
//!       "vip": "127.100.0.1",
//!       "port": 80,
//!       "lb_policy": "round_robin",
//!       "target_port": 0,
//!       "backends": [
//!         { "name": "web-1", "address": "127.0.1.1", "port": 8080, "weight": 1, "priority": 0 },
//!         { "name": "web-2", "address": "127.0.1.2", "port": 8080, "priority": 1 }
//!       ]
//!     }
//!   ]
//! }
//! ```
//!
//! - `vip` must be in 127.0.0.0/8, so that a connect the dataplane does not rewrite
//!   stays on loopback; `vip` and `port` together name a service and are unique.
//! - `lb_policy`: `random` (default), `round_robin` or `weighted` (dataplane v2 and
//!   later; v1 falls back to random); `target_port` (default 0): the
//!   port every backend of the service is reached on instead of its own.
//! - A backend is identified by `address` and `port`; the same backend may serve several
//!   services. `weight` defaults to 1, `priority` to 0 and is below
//!   [`PRIO_COUNT`]: the dataplane uses the lowest priority that has backends.
//! - `name` of a backend is what the backend answers with in the traffic harness; it is
//!   not written to the maps.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// Priority levels of the dataplane (`PRIO_COUNT` in programs/dataplane/dataplane.h).
pub const PRIO_COUNT: u32 = 4;

/// The whole configuration.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Every service.
    pub services: Vec<Service>,
}

/// One service: a VIP and port, and the backends it is balanced over.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Service {
    /// A name for logs.
    pub name: String,
    /// The virtual address clients connect to (in 127.0.0.0/8).
    pub vip: Ipv4Addr,
    /// The port clients connect to.
    pub port: u16,
    /// How a backend is chosen.
    #[serde(default)]
    pub lb_policy: LbPolicy,
    /// The port every backend is reached on instead of its own (0: its own).
    #[serde(default)]
    pub target_port: u16,
    /// The backends.
    pub backends: Vec<Backend>,
}

/// One backend of a service.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Backend {
    /// What the backend calls itself (the traffic harness's backends answer with it).
    pub name: String,
    /// Its address.
    pub address: Ipv4Addr,
    /// Its port.
    pub port: u16,
    /// Relative weight (used by the `weighted` policy).
    #[serde(default = "one")]
    pub weight: u16,
    /// Priority level, 0 (preferred) to `PRIO_COUNT - 1`.
    #[serde(default)]
    pub priority: u32,
}

fn one() -> u16 {
    1
}

/// How a service's backend is chosen: the slot of the policy program in `lb_policies`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LbPolicy {
    /// Uniformly at random among the endpoints of the chosen priority.
    #[default]
    Random,
    /// In turn.
    RoundRobin,
    /// At random, in proportion to the backends' weights (dataplane v2; v1 has no
    /// program for it and falls back to random).
    Weighted,
}

impl LbPolicy {
    /// The policy's slot in the `lb_policies` program array.
    #[must_use]
    pub fn slot(self) -> u32 {
        match self {
            LbPolicy::Random => 0,
            LbPolicy::RoundRobin => 1,
            LbPolicy::Weighted => 2,
        }
    }

    /// The policy of slot `slot`, if it is one this daemon knows.
    #[must_use]
    pub fn from_slot(slot: u32) -> Option<Self> {
        match slot {
            0 => Some(LbPolicy::Random),
            1 => Some(LbPolicy::RoundRobin),
            2 => Some(LbPolicy::Weighted),
            _ => None,
        }
    }
}

/// A configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file cannot be read.
    #[error("reading config {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid JSON of the documented shape.
    #[error("parsing config {path}: {source}")]
    Parse {
        /// The file.
        path: String,
        /// The error, with line and column.
        #[source]
        source: serde_json::Error,
    },
    /// A value is out of range or conflicts with another.
    #[error("config {path}: {at}: {reason}")]
    Invalid {
        /// The file.
        path: String,
        /// Where, as a JSON path (`services[1].backends[0].priority`).
        at: String,
        /// What is wrong.
        reason: String,
    },
}

impl Config {
    /// Reads and checks the configuration in `path`.
    ///
    /// # Errors
    /// The file cannot be read, is not JSON of the documented shape, or has a value
    /// out of range ([`Config::check`]).
    pub fn read(path: &Path) -> Result<Self, ConfigError> {
        let shown = path.display().to_string();
        let text = std::fs::read(path).map_err(|source| ConfigError::Read {
            path: shown.clone(),
            source,
        })?;
        Self::parse(&text, &shown)
    }

    /// Parses and checks a configuration; `path` names it in errors.
    ///
    /// # Errors
    /// As [`Config::read`].
    pub fn parse(text: &[u8], path: &str) -> Result<Self, ConfigError> {
        let config: Config = serde_json::from_slice(text).map_err(|source| ConfigError::Parse {
            path: path.to_owned(),
            source,
        })?;
        config
            .check()
            .map_err(|(at, reason)| ConfigError::Invalid {
                path: path.to_owned(),
                at,
                reason,
            })?;
        Ok(config)
    }

    /// Checks the rules of the module documentation; the error names the offending
    /// value by its JSON path.
    ///
    /// # Errors
    /// `(path, reason)` of the first value that breaks a rule.
    pub fn check(&self) -> Result<(), (String, String)> {
        let mut seen: BTreeMap<(Ipv4Addr, u16), usize> = BTreeMap::new();
        for (i, s) in self.services.iter().enumerate() {
            let at = format!("services[{i}]");
            if s.vip.octets()[0] != 127 {
                return Err((
                    format!("{at}.vip"),
                    format!("{} is not in 127.0.0.0/8", s.vip),
                ));
            }
            if s.port == 0 {
                return Err((format!("{at}.port"), "port 0 cannot be connected to".into()));
            }
            if let Some(first) = seen.insert((s.vip, s.port), i) {
                return Err((
                    at,
                    format!(
                        "{}:{} is also services[{first}]; a VIP and port name one service",
                        s.vip, s.port
                    ),
                ));
            }
            let mut backends: BTreeMap<(Ipv4Addr, u16), usize> = BTreeMap::new();
            for (j, b) in s.backends.iter().enumerate() {
                let at = format!("{at}.backends[{j}]");
                if b.priority >= PRIO_COUNT {
                    return Err((
                        format!("{at}.priority"),
                        format!("{} is out of range 0..={}", b.priority, PRIO_COUNT - 1),
                    ));
                }
                if b.port == 0 && s.target_port == 0 {
                    return Err((
                        format!("{at}.port"),
                        "port 0 without a service target_port".into(),
                    ));
                }
                if let Some(first) = backends.insert((b.address, b.port), j) {
                    return Err((
                        at,
                        format!(
                            "{}:{} is listed twice in this service (also backends[{first}])",
                            b.address, b.port
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    /// Every backend of every service by address and port, with its name (the first
    /// name given when a backend serves several services).
    #[must_use]
    pub fn backend_names(&self) -> BTreeMap<(Ipv4Addr, u16), String> {
        let mut out = BTreeMap::new();
        for b in self.services.iter().flat_map(|s| &s.backends) {
            out.entry((b.address, b.port))
                .or_insert_with(|| b.name.clone());
        }
        out
    }
}

#[cfg(test)]
#[expect(
    clippy::indexing_slicing,
    reason = "tests index the configs they built"
)]
mod tests {
    use super::*;

    const GOOD: &str = r#"{"services": [{"name": "web", "vip": "127.100.0.1", "port": 80,
        "lb_policy": "round_robin",
        "backends": [{"name": "a", "address": "127.0.1.1", "port": 8080},
                     {"name": "b", "address": "127.0.1.2", "port": 8080, "weight": 3, "priority": 1}]}]}"#;

    #[test]
    fn the_documented_format_parses_with_defaults() {
        let c = Config::parse(GOOD.as_bytes(), "t.json").unwrap();
        let s = &c.services[0];
        assert_eq!(s.lb_policy, LbPolicy::RoundRobin);
        assert_eq!(s.target_port, 0);
        assert_eq!(s.backends[0].weight, 1);
        assert_eq!(s.backends[0].priority, 0);
        assert_eq!(s.backends[1].weight, 3);
        assert_eq!(s.backends[1].priority, 1);
    }

    fn invalid(text: &str) -> String {
        Config::parse(text.as_bytes(), "t.json")
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn errors_name_the_offending_value() {
        let vip = GOOD.replace("127.100.0.1", "10.0.0.1");
        assert_eq!(
            invalid(&vip),
            "config t.json: services[0].vip: 10.0.0.1 is not in 127.0.0.0/8"
        );
        let prio = GOOD.replace("\"priority\": 1", "\"priority\": 4");
        assert_eq!(
            invalid(&prio),
            "config t.json: services[0].backends[1].priority: 4 is out of range 0..=3"
        );
        let twice = GOOD.replace("127.0.1.2", "127.0.1.1");
        assert!(invalid(&twice).contains("backends[1]: 127.0.1.1:8080 is listed twice"));
        let unknown = GOOD.replace("\"weight\"", "\"wieght\"");
        assert!(invalid(&unknown).contains("unknown field `wieght`"));
        let policy = GOOD.replace("round_robin", "fastest");
        assert!(invalid(&policy).contains("unknown variant `fastest`"));
    }

    #[test]
    fn a_vip_and_port_name_one_service() {
        let c: Config = serde_json::from_str(GOOD).unwrap();
        let mut two = c.clone();
        two.services.push(c.services[0].clone());
        let (at, reason) = two.check().unwrap_err();
        assert_eq!(at, "services[1]");
        assert!(reason.contains("also services[0]"), "{reason}");
    }
}
