//! Program types given by the caller, for sections whose names say none (or say another):
//! by exact section name, by section-name prefix, or one for every program (bpftool's
//! `type`).

use std::collections::BTreeMap;

use handover_uapi::{AttachType, ProgramType};

/// A program type and the expected attach type that goes with it.
pub type TypeAndAttach = (ProgramType, Option<AttachType>);

/// Rules giving program types by section name. A section's type comes from its exact
/// rule, else from the longest prefix rule it starts with, else from the rule for every
/// program; without a rule, from its name as libbpf reads it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProgramTypes {
    exact: BTreeMap<String, TypeAndAttach>,
    prefixes: BTreeMap<String, TypeAndAttach>,
    every: Option<TypeAndAttach>,
}

impl ProgramTypes {
    /// No rules: every type comes from the section's name.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether no rule is given.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.exact.is_empty() && self.prefixes.is_empty() && self.every.is_none()
    }

    /// The programs in section `section` (exactly; a leading `?` may be given or not)
    /// are of `prog_type`, verified for `attach_type`.
    #[must_use]
    pub fn section(
        mut self,
        section: &str,
        prog_type: ProgramType,
        attach_type: Option<AttachType>,
    ) -> Self {
        self.exact
            .insert(strip_optional(section).to_owned(), (prog_type, attach_type));
        self
    }

    /// The programs in every section whose name starts with `prefix` are of
    /// `prog_type` (the longest matching prefix wins).
    #[must_use]
    pub fn prefix(
        mut self,
        prefix: &str,
        prog_type: ProgramType,
        attach_type: Option<AttachType>,
    ) -> Self {
        self.prefixes
            .insert(strip_optional(prefix).to_owned(), (prog_type, attach_type));
        self
    }

    /// Every program without an exact or prefix rule is of `prog_type`, whatever its
    /// section's name says (as bpftool's `prog loadall ... type TYPE`).
    #[must_use]
    pub fn every(mut self, prog_type: ProgramType, attach_type: Option<AttachType>) -> Self {
        self.every = Some((prog_type, attach_type));
        self
    }

    /// Adds the rule written `SECTION=TYPE[:ATTACH]`: `SECTION` exactly, `PREFIX*` for
    /// every section starting with `PREFIX`, `*` for every program. Types are spelled as
    /// the kernel's enumerators in lower case without prefix (`sched_cls`,
    /// `cgroup_sock_addr:cgroup_inet4_connect`). Type names hold neither `=` nor `:`,
    /// so the section is everything before the last `=`.
    ///
    /// # Errors
    /// The text is not of that form, or names an unknown type.
    pub fn rule(self, text: &str) -> Result<Self, String> {
        let (section, spec) = text
            .rsplit_once('=')
            .ok_or_else(|| format!("{text:?} is not SECTION=TYPE[:ATTACH]"))?;
        let (ty, attach) = match spec.split_once(':') {
            Some((ty, attach)) => (ty, Some(attach)),
            None => (spec, None),
        };
        let ty = ty.parse::<ProgramType>().map_err(|e| e.to_string())?;
        let attach = attach
            .map(str::parse::<AttachType>)
            .transpose()
            .map_err(|e| e.to_string())?;
        if section.is_empty() {
            return Err(format!(
                "{text:?} names no section (use * for every program)"
            ));
        }
        Ok(match section.strip_suffix('*') {
            Some("") => self.every(ty, attach),
            Some(prefix) => self.prefix(prefix, ty, attach),
            None => self.section(section, ty, attach),
        })
    }

    /// The type the rules give the programs of `section`, if any.
    #[must_use]
    pub fn lookup(&self, section: &str) -> Option<TypeAndAttach> {
        let section = strip_optional(section);
        if let Some(t) = self.exact.get(section) {
            return Some(*t);
        }
        self.prefixes
            .iter()
            .filter(|(p, _)| section.starts_with(p.as_str()))
            .max_by_key(|(p, _)| p.len())
            .map(|(_, t)| *t)
            .or(self.every)
    }
}

/// A section name without the `?` that marks its programs as not loaded by default.
fn strip_optional(section: &str) -> &str {
    section.strip_prefix('?').unwrap_or(section)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_rules_win_over_prefixes_and_the_longest_prefix_over_shorter_ones() {
        let rules = ProgramTypes::new()
            .rule("cgroup/connect4/*=cgroup_sock_addr:cgroup_inet4_connect")
            .unwrap()
            .rule("cgroup/*=cgroup_skb")
            .unwrap()
            .rule("cgroup/connect4/LAST=sched_cls")
            .unwrap();
        assert_eq!(
            rules.lookup("cgroup/connect4/TAIL_CALL_1"),
            Some((
                ProgramType::CgroupSockAddr,
                Some(AttachType::CgroupInet4Connect)
            ))
        );
        assert_eq!(
            rules.lookup("cgroup/connect4/LAST"),
            Some((ProgramType::SchedCls, None))
        );
        assert_eq!(
            rules.lookup("?cgroup/x"),
            Some((ProgramType::CgroupSkb, None))
        );
        assert_eq!(rules.lookup("xdp_custom"), None);
        let every = rules.rule("*=xdp").unwrap();
        assert_eq!(every.lookup("xdp_custom"), Some((ProgramType::Xdp, None)));
    }

    #[test]
    fn malformed_rules_say_what_is_wrong() {
        let err = |t: &str| ProgramTypes::new().rule(t).unwrap_err();
        assert!(err("xdp_custom").contains("SECTION=TYPE"));
        assert!(err("x=no_such_type").contains("no_such_type"));
        assert!(err("x=xdp:no_such_attach").contains("no_such_attach"));
        assert!(err("=xdp").contains("names no section"));
    }
}
