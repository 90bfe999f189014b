//! The plan of an upgrade as a value: computed, printed, stored and read back before
//! anything runs.

use serde::{Deserialize, Serialize};

use crate::diff::verdict::{DiffReport, MapDiff};

/// What an upgrade does with every map: the verdict and field mapping of each, under
/// the policy the diff followed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    /// Per-map verdicts and field mappings.
    pub diff: DiffReport,
}

impl Plan {
    /// The plan that carries out `diff`.
    #[must_use]
    pub fn new(diff: DiffReport) -> Plan {
        Plan { diff }
    }

    /// The entry of map `name`.
    #[must_use]
    pub fn map(&self, name: &str) -> Option<&MapDiff> {
        self.diff.maps.iter().find(|m| m.name == name)
    }

    /// Whether any map would lose entries.
    #[must_use]
    pub fn loses_entries(&self) -> bool {
        self.diff.loses_entries()
    }
}

#[cfg(test)]
mod tests {
    use super::Plan;
    use crate::{DiffReport, MapDiff, Policy, Verdict};

    #[test]
    fn a_plan_read_back_from_json_equals_the_plan_written() {
        let plan = Plan::new(DiffReport {
            policy: Policy::Migrate,
            maps: vec![MapDiff {
                name: "counts".into(),
                verdict: Verdict::Reuse,
                loses_entries: false,
                changes: Vec::new(),
                fields: Vec::new(),
                notes: vec!["unchanged".into()],
                key_plan: None,
                value_plan: None,
            }],
        });
        let json = serde_json::to_string(&plan).unwrap();
        let back: Plan = serde_json::from_str(&json).unwrap();
        assert_eq!(back, plan);
        assert_eq!(back.map("counts").map(|m| m.verdict), Some(Verdict::Reuse));
        assert!(!back.loses_entries());
    }
}
