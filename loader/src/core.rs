//! CO-RE relocations: rewriting the instructions of a program so that the field offsets,
//! sizes, type ids and enum values it was compiled with (the object's BTF) match those
//! of a target BTF (the running kernel's).
//!
//! The rules are libbpf's (`relo_core.c`), so a program relocated here is the program
//! libbpf would load: candidates are target types of a compatible kind whose name equals
//! the local name without its `___flavor` suffix; each candidate that matches the
//! relocation's access path yields a value, and all of them must agree. A relocation no
//! candidate matches gives the value a missing field, type or enumerator has (`0` for
//! the `*_exists` kinds), or, where no such value exists, poisons its instruction: it
//! becomes a call to the nonexistent helper [`POISON_HELPER`], which the verifier only
//! rejects if the instruction is reachable.
//!
//! Everything here is pure: the target BTF is given as bytes already parsed.

use std::collections::HashMap;

use handover_btf::{Btf, Detail, Kind, Type, TypeId};

use crate::btf_ext::CoreRelocation;
use crate::program::ProgramSpec;
use handover_uapi::{CALL, Insn};

/// Helper id of the call that replaces an instruction whose relocation cannot be
/// resolved (libbpf's `0xbad2310`, "bad relo").
pub const POISON_HELPER: i32 = 0x0bad_2310;

/// Longest access path, in indexes (libbpf's `BPF_CORE_SPEC_MAX_LEN`).
const MAX_SPEC_LEN: usize = 64;

/// Deepest nesting followed when comparing two types.
const MAX_COMPAT_DEPTH: u32 = 32;

/// `enum bpf_core_relo_kind`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CoreKind {
    /// Byte offset of a field.
    FieldByteOffset,
    /// Byte size of a field.
    FieldByteSize,
    /// Whether a field exists.
    FieldExists,
    /// Whether a field is signed.
    FieldSigned,
    /// Left shift that brings a bitfield to the top of a `u64`.
    FieldLshiftU64,
    /// Right shift that brings it back down.
    FieldRshiftU64,
    /// Type id in the object's BTF.
    TypeIdLocal,
    /// Type id in the target BTF.
    TypeIdTarget,
    /// Whether a type exists.
    TypeExists,
    /// Size of a type.
    TypeSize,
    /// Whether an enumerator exists.
    EnumvalExists,
    /// Value of an enumerator.
    EnumvalValue,
    /// Whether a type matches in layout (`bpf_core_type_matches`).
    TypeMatches,
}

impl CoreKind {
    /// The kind numbered `raw` in `.BTF.ext`.
    #[must_use]
    pub const fn from_raw(raw: u32) -> Option<Self> {
        Some(match raw {
            0 => Self::FieldByteOffset,
            1 => Self::FieldByteSize,
            2 => Self::FieldExists,
            3 => Self::FieldSigned,
            4 => Self::FieldLshiftU64,
            5 => Self::FieldRshiftU64,
            6 => Self::TypeIdLocal,
            7 => Self::TypeIdTarget,
            8 => Self::TypeExists,
            9 => Self::TypeSize,
            10 => Self::EnumvalExists,
            11 => Self::EnumvalValue,
            12 => Self::TypeMatches,
            _ => return None,
        })
    }

    const fn is_field(self) -> bool {
        matches!(
            self,
            Self::FieldByteOffset
                | Self::FieldByteSize
                | Self::FieldExists
                | Self::FieldSigned
                | Self::FieldLshiftU64
                | Self::FieldRshiftU64
        )
    }

    const fn is_type(self) -> bool {
        matches!(
            self,
            Self::TypeIdLocal
                | Self::TypeIdTarget
                | Self::TypeExists
                | Self::TypeSize
                | Self::TypeMatches
        )
    }

    const fn is_enumval(self) -> bool {
        matches!(self, Self::EnumvalExists | Self::EnumvalValue)
    }
}

/// Why a relocation could not be applied at all (as opposed to being poisoned).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "program {program}: CO-RE relocation #{index} ({kind} of type [{type_id}] access \"{access}\") at instruction {insn}: {reason}"
)]
pub struct CoreError {
    /// The program.
    pub program: String,
    /// Index of the relocation in [`ProgramSpec::core_relocations`].
    pub index: usize,
    /// Its instruction.
    pub insn: u32,
    /// Its kind, by name.
    pub kind: &'static str,
    /// Its root type id in the object's BTF.
    pub type_id: u32,
    /// Its access string.
    pub access: String,
    /// What is wrong.
    pub reason: String,
}

/// What one relocation did to its instruction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CoreOutcome {
    /// Index of the relocation in [`ProgramSpec::core_relocations`].
    pub index: usize,
    /// The instruction it patched.
    pub insn: u32,
    /// Its kind.
    pub kind: CoreKind,
    /// The value the object was compiled with.
    pub local: u64,
    /// The value written for the target, or `None` when the instruction was poisoned.
    pub target: Option<u64>,
    /// Why the instruction was poisoned (a call to [`POISON_HELPER`]): the relocation
    /// has no value on the target.
    pub poisoned: Option<String>,
}

/// A target BTF with the index of its named types by essential name (the name without
/// any `___flavor` suffix), built once and shared by every relocation of a load.
pub struct CoreTarget<'t> {
    btf: &'t Btf<'t>,
    by_name: HashMap<&'t str, Vec<TypeId>>,
}

impl std::fmt::Debug for CoreTarget<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CoreTarget")
            .field("names", &self.by_name.len())
            .finish_non_exhaustive()
    }
}

impl<'t> CoreTarget<'t> {
    /// Indexes the named types of `btf` (allocates one entry per distinct name).
    #[must_use]
    pub fn new(btf: &'t Btf<'t>) -> Self {
        let mut by_name: HashMap<&'t str, Vec<TypeId>> = HashMap::new();
        for (id, t) in btf.types() {
            if let Ok(name) = t.name()
                && !name.is_empty()
            {
                by_name.entry(essential(name)).or_default().push(id);
            }
        }
        Self { btf, by_name }
    }

    /// The target BTF.
    #[must_use]
    pub fn btf(&self) -> &'t Btf<'t> {
        self.btf
    }

    /// Target types that may stand for the local type `local`: same essential name and
    /// a compatible kind, in id order.
    fn candidates(&self, local: &Type<'_>, name: &str) -> Vec<TypeId> {
        let Some(ids) = self.by_name.get(essential(name)) else {
            return Vec::new();
        };
        ids.iter()
            .copied()
            .filter(|&id| {
                self.btf
                    .type_by_id(id)
                    .is_ok_and(|t| kinds_compatible(t.kind(), local.kind()))
            })
            .collect()
    }
}

/// `name` without its flavor: everything from the last `___` that has a non-`_`
/// character on both sides (`task_struct___old` -> `task_struct`).
fn essential(name: &str) -> &str {
    let sep = name
        .as_bytes()
        .windows(5)
        .rposition(|w| matches!(w, [a, b'_', b'_', b'_', e] if *a != b'_' && *e != b'_'));
    // The separator starts after an ASCII byte, so the cut is a char boundary.
    sep.and_then(|i| name.get(..=i)).unwrap_or(name)
}

fn kinds_compatible(a: Kind, b: Kind) -> bool {
    a == b || (is_enum(a) && is_enum(b))
}

fn is_enum(k: Kind) -> bool {
    matches!(k, Kind::Enum | Kind::Enum64)
}

fn is_composite(k: Kind) -> bool {
    matches!(k, Kind::Struct | Kind::Union)
}

/// Follows modifiers and typedefs: the id reached and its record (`None` for `void`).
fn skip_mods<'b>(btf: &'b Btf<'b>, id: TypeId) -> Result<(TypeId, Option<Type<'b>>), String> {
    let id = btf
        .resolve(id)
        .map_err(|e| format!("type [{}]: {e}", id.0))?;
    if id.0 == 0 {
        return Ok((id, None));
    }
    let t = btf
        .type_by_id(id)
        .map_err(|e| format!("type [{}]: {e}", id.0))?;
    Ok((id, Some(t)))
}

fn size_of(btf: &Btf<'_>, id: TypeId) -> Result<u64, String> {
    btf.size_of(id)
        .map(u64::from)
        .map_err(|e| format!("size of type [{}]: {e}", id.0))
}

fn type_of<'b>(btf: &'b Btf<'b>, id: TypeId) -> Result<Type<'b>, String> {
    btf.type_by_id(id)
        .map_err(|e| format!("type [{}]: {e}", id.0))
}

/// One step of an access path that names something: a member (`name` set) or an
/// array element (`name` unset; the first step always is one).
#[derive(Clone, Copy, Debug)]
struct Accessor<'a> {
    /// The struct, union or enum holding the member, or the element type.
    type_id: TypeId,
    idx: u32,
    name: Option<&'a str>,
}

/// An access path resolved in one BTF (libbpf's `bpf_core_spec`).
#[derive(Clone, Debug)]
struct Spec<'a> {
    btf: &'a Btf<'a>,
    root: TypeId,
    acc: Vec<Accessor<'a>>,
    raw_len: usize,
    bit_offset: u64,
}

impl<'a> Spec<'a> {
    fn new(btf: &'a Btf<'a>, root: TypeId) -> Self {
        Self {
            btf,
            root,
            acc: Vec::new(),
            raw_len: 0,
            bit_offset: 0,
        }
    }
}

fn member_at<'b>(t: &Type<'b>, idx: u32) -> Option<handover_btf::Member<'b>> {
    match t.detail() {
        Detail::Struct(c) | Detail::Union(c) => c.members.clone().nth(idx as usize),
        _ => None,
    }
}

/// Whether an array following accessor `prev` is a flexible array member: zero-length,
/// and the last member of its struct.
fn is_flex(btf: &Btf<'_>, prev: Option<&Accessor<'_>>, nelems: u32) -> bool {
    let Some(prev) = prev else { return false };
    if prev.name.is_none() || nelems > 0 {
        return false;
    }
    btf.type_by_id(prev.type_id)
        .is_ok_and(|t| u32::from(t.vlen()).checked_sub(1) == Some(prev.idx))
}

fn parse_access(access: &str) -> Result<Vec<u32>, String> {
    if access.is_empty() || access.starts_with(':') {
        return Err("empty access string".into());
    }
    let raw = access
        .split(':')
        .map(|s| {
            s.parse::<u32>()
                .map_err(|_| format!("access string component {s:?} is not an index"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    if raw.len() > MAX_SPEC_LEN {
        return Err(format!("access string longer than {MAX_SPEC_LEN} indexes"));
    }
    Ok(raw)
}

/// Walks the access string of a relocation through the local type.
fn parse_spec<'a>(
    btf: &'a Btf<'a>,
    root: TypeId,
    access: &str,
    kind: CoreKind,
) -> Result<Spec<'a>, String> {
    let raw = parse_access(access)?;
    let mut spec = Spec::new(btf, root);
    spec.raw_len = raw.len();
    if kind.is_type() {
        if access != "0" {
            return Err("a type relocation's access string must be \"0\"".into());
        }
        return Ok(spec);
    }
    let (&first, rest) = raw.split_first().ok_or("empty access string")?;
    let (mut id, t) = skip_mods(btf, root)?;
    let t = t.ok_or("the root type is void")?;
    if kind.is_enumval() {
        let values = match t.detail() {
            Detail::Enum(e) | Detail::Enum64(e) => e.values,
            _ => return Err("an enum value relocation's type is not an enum".into()),
        };
        if !rest.is_empty() {
            return Err("an enum value relocation's access string has more than one index".into());
        }
        let v = values
            .clone()
            .nth(first as usize)
            .ok_or_else(|| format!("enumerator {first} out of range"))?;
        let name = v.name().map_err(|e| e.to_string())?;
        spec.acc.push(Accessor {
            type_id: id,
            idx: first,
            name: Some(name),
        });
        return Ok(spec);
    }
    spec.acc.push(Accessor {
        type_id: id,
        idx: first,
        name: None,
    });
    spec.bit_offset = u64::from(first) * size_of(btf, id)? * 8;
    for &idx in rest {
        let (rid, t) = skip_mods(btf, id)?;
        let t = t.ok_or("the access path goes through void")?;
        match t.detail() {
            Detail::Struct(_) | Detail::Union(_) => {
                let m = member_at(&t, idx)
                    .ok_or_else(|| format!("member {idx} out of range in type [{}]", rid.0))?;
                spec.bit_offset += u64::from(m.bit_offset);
                if m.name_off.0 != 0 {
                    let name = m.name().map_err(|e| e.to_string())?;
                    if name.is_empty() {
                        return Err(format!(
                            "member {idx} of type [{}] has an empty name",
                            rid.0
                        ));
                    }
                    spec.acc.push(Accessor {
                        type_id: rid,
                        idx,
                        name: Some(name),
                    });
                }
                id = m.ty;
            }
            Detail::Array(a) => {
                let (eid, _) = skip_mods(btf, a.elem)?;
                if !is_flex(btf, spec.acc.last(), a.nelems) && idx >= a.nelems {
                    return Err(format!(
                        "index {idx} out of range of array [{}] ({} elements)",
                        rid.0, a.nelems
                    ));
                }
                spec.acc.push(Accessor {
                    type_id: eid,
                    idx,
                    name: None,
                });
                spec.bit_offset += u64::from(idx) * size_of(btf, eid)? * 8;
                id = eid;
            }
            _ => {
                return Err(format!(
                    "the access path reaches type [{}] of kind {:?}, neither a struct, union nor array",
                    rid.0,
                    t.kind()
                ));
            }
        }
    }
    Ok(spec)
}

/// Whether a local field type and a target field type may hold the same value.
fn fields_compatible(
    lbtf: &Btf<'_>,
    lid: TypeId,
    tbtf: &Btf<'_>,
    tid: TypeId,
) -> Result<bool, String> {
    let (mut lid, mut tid) = (lid, tid);
    for _ in 0..MAX_COMPAT_DEPTH {
        let (_, l) = skip_mods(lbtf, lid)?;
        let (_, t) = skip_mods(tbtf, tid)?;
        let (Some(l), Some(t)) = (l, t) else {
            return Ok(false);
        };
        if is_composite(l.kind()) && is_composite(t.kind()) {
            return Ok(true);
        }
        if !kinds_compatible(l.kind(), t.kind()) {
            return Ok(false);
        }
        match (l.detail(), t.detail()) {
            (Detail::Ptr(_), _) | (Detail::Float { .. }, _) => return Ok(true),
            (Detail::Fwd { .. } | Detail::Enum(_) | Detail::Enum64(_), _) => {
                let ln = essential(l.name().map_err(|e| e.to_string())?);
                let tn = essential(t.name().map_err(|e| e.to_string())?);
                return Ok(ln.is_empty() || tn.is_empty() || ln == tn);
            }
            (Detail::Int(a), Detail::Int(b)) => return Ok(a.offset == 0 && b.offset == 0),
            (Detail::Array(a), Detail::Array(b)) => {
                lid = a.elem;
                tid = b.elem;
            }
            _ => return Ok(false),
        }
    }
    Err("types nest too deeply".into())
}

/// Whether a local type and a kernel type are compatible (`bpf_core_types_are_compat`):
/// the test a `__ksym` extern's type passes against the kernel's.
pub(crate) fn types_are_compat(
    lbtf: &Btf<'_>,
    lid: TypeId,
    tbtf: &Btf<'_>,
    tid: TypeId,
) -> Result<bool, String> {
    types_compatible(lbtf, lid, tbtf, tid, MAX_COMPAT_DEPTH)
}

/// Whether a local type and a target type are compatible for a type relocation.
fn types_compatible(
    lbtf: &Btf<'_>,
    lid: TypeId,
    tbtf: &Btf<'_>,
    tid: TypeId,
    level: u32,
) -> Result<bool, String> {
    if level == 0 {
        return Err("types nest too deeply".into());
    }
    let (mut lid, mut tid) = (lid, tid);
    for _ in 0..MAX_COMPAT_DEPTH {
        let (_, l) = skip_mods(lbtf, lid)?;
        let (_, t) = skip_mods(tbtf, tid)?;
        let (l, t) = match (l, t) {
            (None, None) => return Ok(true),
            (Some(l), Some(t)) => (l, t),
            _ => return Ok(false),
        };
        if !kinds_compatible(l.kind(), t.kind()) {
            return Ok(false);
        }
        match (l.detail(), t.detail()) {
            (
                Detail::Struct(_)
                | Detail::Union(_)
                | Detail::Enum(_)
                | Detail::Enum64(_)
                | Detail::Fwd { .. },
                _,
            ) => return Ok(true),
            (Detail::Int(a), Detail::Int(b)) => return Ok(a.offset == 0 && b.offset == 0),
            (Detail::Ptr(a), Detail::Ptr(b)) => {
                lid = a;
                tid = b;
            }
            (Detail::Array(a), Detail::Array(b)) => {
                lid = a.elem;
                tid = b.elem;
            }
            (Detail::FuncProto(a), Detail::FuncProto(b)) => {
                if a.params.len() != b.params.len() {
                    return Ok(false);
                }
                for (p, q) in a.params.clone().zip(b.params.clone()) {
                    if !types_compatible(lbtf, p.ty, tbtf, q.ty, level - 1)? {
                        return Ok(false);
                    }
                }
                lid = TypeId(l.size_or_type());
                tid = TypeId(t.size_or_type());
            }
            _ => return Ok(false),
        }
    }
    Err("types nest too deeply".into())
}

/// Whether two names are equal once flavors are dropped; an anonymous target only
/// matches an anonymous local.
fn names_match(local: &str, target: &str) -> bool {
    if target.is_empty() {
        return local.is_empty();
    }
    essential(local) == essential(target)
}

fn name_of(t: &Type<'_>) -> Result<String, String> {
    t.name().map(str::to_owned).map_err(|e| e.to_string())
}

/// Whether a local type matches a target type in layout (`bpf_core_type_matches`):
/// same names (flavors dropped) and kinds all the way down; integers of equal width and
/// signedness; enums whose every local enumerator is named in the target; structs and
/// unions whose every local member has a same-named matching member in the target
/// (behind a pointer, a forward declaration of the same kind is enough); arrays of the
/// same length; function prototypes with matching parameters and return types.
fn types_match(
    lbtf: &Btf<'_>,
    lid: TypeId,
    tbtf: &Btf<'_>,
    tid: TypeId,
    behind_ptr: bool,
    level: u32,
) -> Result<bool, String> {
    if level == 0 {
        return Err("types nest too deeply".into());
    }
    let (mut lid, mut tid, mut behind_ptr) = (lid, tid, behind_ptr);
    for _ in 0..MAX_COMPAT_DEPTH {
        let (_, l) = skip_mods(lbtf, lid)?;
        let (_, t) = skip_mods(tbtf, tid)?;
        let (l, t) = match (l, t) {
            (None, None) => return Ok(true),
            (Some(l), Some(t)) => (l, t),
            (None, Some(_)) | (Some(_), None) => return Ok(false),
        };
        if !names_match(&name_of(&l)?, &name_of(&t)?) {
            return Ok(false);
        }
        let (lk, tk) = (l.kind(), t.kind());
        match (l.detail(), t.detail()) {
            (Detail::Fwd { is_union }, _) => {
                return Ok(match t.detail() {
                    Detail::Fwd { is_union: other } => is_union == other,
                    Detail::Struct(_) if behind_ptr => !is_union,
                    Detail::Union(_) if behind_ptr => is_union,
                    _ => false,
                });
            }
            (Detail::Enum(le) | Detail::Enum64(le), Detail::Enum(te) | Detail::Enum64(te)) => {
                if le.size != te.size || le.values.len() > te.values.len() {
                    return Ok(false);
                }
                for lv in le.values.clone() {
                    let ln = lv.name().map_err(|e| e.to_string())?;
                    let found = te
                        .values
                        .clone()
                        .any(|tv| tv.name().is_ok_and(|tn| names_match(ln, tn)));
                    if !found {
                        return Ok(false);
                    }
                }
                return Ok(true);
            }
            (Detail::Struct(lc) | Detail::Union(lc), _) => {
                if behind_ptr {
                    return Ok(match t.detail() {
                        _ if lk == tk => true,
                        Detail::Fwd { is_union } => is_union == (lk == Kind::Union),
                        _ => false,
                    });
                }
                let (Detail::Struct(tc) | Detail::Union(tc)) = t.detail() else {
                    return Ok(false);
                };
                if lk != tk || lc.members.len() > tc.members.len() {
                    return Ok(false);
                }
                for lm in lc.members.clone() {
                    let ln = lm.name().map_err(|e| e.to_string())?;
                    let mut matched = false;
                    for tm in tc.members.clone() {
                        let tn = tm.name().map_err(|e| e.to_string())?;
                        if names_match(ln, tn)
                            && types_match(lbtf, lm.ty, tbtf, tm.ty, behind_ptr, level - 1)?
                        {
                            matched = true;
                            break;
                        }
                    }
                    if !matched {
                        return Ok(false);
                    }
                }
                return Ok(true);
            }
            (Detail::Int(a), Detail::Int(b)) => {
                return Ok(a.bits == b.bits && a.encoding.is_signed() == b.encoding.is_signed());
            }
            (Detail::Ptr(a), Detail::Ptr(b)) => {
                behind_ptr = true;
                lid = a;
                tid = b;
            }
            (Detail::Array(a), Detail::Array(b)) => {
                if a.nelems != b.nelems {
                    return Ok(false);
                }
                lid = a.elem;
                tid = b.elem;
            }
            (Detail::FuncProto(a), Detail::FuncProto(b)) => {
                if a.params.len() != b.params.len() {
                    return Ok(false);
                }
                for (p, q) in a.params.clone().zip(b.params.clone()) {
                    if !types_match(lbtf, p.ty, tbtf, q.ty, behind_ptr, level - 1)? {
                        return Ok(false);
                    }
                }
                lid = TypeId(l.size_or_type());
                tid = TypeId(t.size_or_type());
            }
            _ => return Ok(false),
        }
    }
    Err("types nest too deeply".into())
}

/// Finds the member named like local accessor `acc` in target composite `tid`, looking
/// through anonymous members; records the path in `spec`. `Ok(Some(next))` gives the
/// member's type.
fn match_member<'t>(
    lbtf: &Btf<'_>,
    acc: &Accessor<'_>,
    tbtf: &'t Btf<'t>,
    tid: TypeId,
    spec: &mut Spec<'t>,
) -> Result<Option<TypeId>, String> {
    let local_t = type_of(lbtf, acc.type_id)?;
    let local_m = member_at(&local_t, acc.idx).ok_or("local member out of range")?;
    let local_name = acc.name.unwrap_or("");
    let (tid, t) = skip_mods(tbtf, tid)?;
    let Some(t) = t else { return Ok(None) };
    let members = match t.detail() {
        Detail::Struct(c) | Detail::Union(c) => c.members,
        _ => return Ok(None),
    };
    for (i, m) in members.enumerate() {
        if spec.raw_len >= MAX_SPEC_LEN {
            return Err(format!("access path longer than {MAX_SPEC_LEN} steps"));
        }
        spec.bit_offset += u64::from(m.bit_offset);
        spec.raw_len += 1;
        let name = m.name().map_err(|e| e.to_string())?;
        let idx = u32::try_from(i).map_err(|_| "too many members")?;
        if name.is_empty() {
            if let Some(next) = match_member(lbtf, acc, tbtf, m.ty, spec)? {
                return Ok(Some(next));
            }
        } else if name == local_name {
            spec.acc.push(Accessor {
                type_id: tid,
                idx,
                name: Some(name),
            });
            return Ok(fields_compatible(lbtf, local_m.ty, tbtf, m.ty)?.then_some(m.ty));
        }
        spec.bit_offset -= u64::from(m.bit_offset);
        spec.raw_len -= 1;
    }
    Ok(None)
}

/// The target spec of candidate `cand` for local spec `local`, or `None` if it does not
/// match.
fn match_spec<'t>(
    local: &Spec<'_>,
    kind: CoreKind,
    tbtf: &'t Btf<'t>,
    cand: TypeId,
) -> Result<Option<Spec<'t>>, String> {
    let mut spec = Spec::new(tbtf, cand);
    if kind.is_type() {
        if kind == CoreKind::TypeMatches {
            return Ok(
                types_match(local.btf, local.root, tbtf, cand, false, MAX_COMPAT_DEPTH)?
                    .then_some(spec),
            );
        }
        return Ok(
            types_compatible(local.btf, local.root, tbtf, cand, MAX_COMPAT_DEPTH)?.then_some(spec),
        );
    }
    let Some(first) = local.acc.first() else {
        return Err("empty local access path".into());
    };
    if kind.is_enumval() {
        let (tid, t) = skip_mods(tbtf, cand)?;
        let values = match t.map(|t| t.detail()) {
            Some(Detail::Enum(e) | Detail::Enum64(e)) => e.values,
            _ => return Ok(None),
        };
        let want = essential(first.name.unwrap_or(""));
        for (i, v) in values.enumerate() {
            let name = v.name().map_err(|e| e.to_string())?;
            if essential(name) == want {
                spec.acc.push(Accessor {
                    type_id: tid,
                    idx: u32::try_from(i).map_err(|_| "too many enumerators")?,
                    name: Some(name),
                });
                spec.raw_len = 1;
                return Ok(Some(spec));
            }
        }
        return Ok(None);
    }
    let mut tid = cand;
    for (i, acc) in local.acc.iter().enumerate() {
        let (rid, t) = skip_mods(tbtf, tid)?;
        tid = rid;
        if acc.name.is_some() {
            match match_member(local.btf, acc, tbtf, tid, &mut spec)? {
                Some(next) => tid = next,
                None => return Ok(None),
            }
            continue;
        }
        if i > 0 {
            let Some(Detail::Array(a)) = t.map(|t| t.detail()) else {
                return Ok(None);
            };
            if !is_flex(tbtf, spec.acc.last(), a.nelems) && acc.idx >= a.nelems {
                return Ok(None);
            }
            tid = skip_mods(tbtf, a.elem)?.0;
        }
        if spec.raw_len >= MAX_SPEC_LEN {
            return Err(format!("access path longer than {MAX_SPEC_LEN} steps"));
        }
        spec.acc.push(Accessor {
            type_id: tid,
            idx: acc.idx,
            name: None,
        });
        spec.raw_len += 1;
        spec.bit_offset += u64::from(acc.idx) * size_of(tbtf, tid)? * 8;
    }
    Ok(Some(spec))
}

/// A value computed for one side, or the request to poison the instruction.
enum Calc<T> {
    Value(T),
    Poison(String),
}

/// A field relocation's value in one spec, with the memory size and type of the field
/// for loads and stores (0 and void when not a plain field offset).
struct FieldValue {
    value: u64,
    size: u64,
    type_id: TypeId,
    validate: bool,
}

fn calc_field(kind: CoreKind, spec: Option<&Spec<'_>>) -> Result<Calc<FieldValue>, String> {
    let plain = |value| {
        Calc::Value(FieldValue {
            value,
            size: 0,
            type_id: TypeId(0),
            validate: true,
        })
    };
    if kind == CoreKind::FieldExists {
        return Ok(plain(u64::from(spec.is_some())));
    }
    let Some(spec) = spec else {
        return Ok(Calc::Poison(
            "the field does not exist in the target".into(),
        ));
    };
    let btf = spec.btf;
    let acc = spec.acc.last().ok_or("empty access path")?;
    if acc.name.is_none() {
        let size = size_of(btf, acc.type_id)?;
        return match kind {
            CoreKind::FieldByteOffset => Ok(Calc::Value(FieldValue {
                value: spec.bit_offset / 8,
                size,
                type_id: acc.type_id,
                validate: true,
            })),
            CoreKind::FieldByteSize => Ok(plain(size)),
            _ => Err(format!("{kind:?} cannot be applied to an array element")),
        };
    }
    let t = type_of(btf, acc.type_id)?;
    let m = member_at(&t, acc.idx).ok_or("member out of range")?;
    let (field_type, mt) = skip_mods(btf, m.ty)?;
    let mt = mt.ok_or("the field is void")?;
    let bit_off = spec.bit_offset;
    let bitfield = m.bitfield_size > 0;
    let (byte_off, byte_sz, bit_sz) = if bitfield {
        let bit_sz = u64::from(m.bitfield_size);
        let mut byte_sz = u64::from(mt.size_or_type());
        if byte_sz == 0 {
            return Err("bitfield of a zero-sized type".into());
        }
        let mut byte_off = bit_off / 8 / byte_sz * byte_sz;
        while bit_off + bit_sz - byte_off * 8 > byte_sz * 8 {
            if byte_sz >= 8 {
                return Err("the bitfield cannot be read with one 64-bit load".into());
            }
            byte_sz *= 2;
            byte_off = bit_off / 8 / byte_sz * byte_sz;
        }
        (byte_off, byte_sz, bit_sz)
    } else {
        let sz = size_of(btf, field_type)?;
        (bit_off / 8, sz, sz * 8)
    };
    let mut out = FieldValue {
        value: 0,
        size: 0,
        type_id: TypeId(0),
        validate: !bitfield,
    };
    match kind {
        CoreKind::FieldByteOffset => {
            out.value = byte_off;
            if !bitfield {
                out.size = byte_sz;
                out.type_id = field_type;
            }
        }
        CoreKind::FieldByteSize => out.value = byte_sz,
        CoreKind::FieldSigned => {
            out.value = u64::from(match mt.detail() {
                Detail::Enum(_) | Detail::Enum64(_) => mt.kind_flag(),
                Detail::Int(i) => i.encoding.is_signed(),
                _ => false,
            });
            out.validate = true;
        }
        CoreKind::FieldLshiftU64 => {
            out.value = if cfg!(target_endian = "little") {
                64u64.wrapping_sub(bit_off + bit_sz - byte_off * 8)
            } else {
                (8 - byte_sz) * 8 + (bit_off - byte_off * 8)
            };
        }
        CoreKind::FieldRshiftU64 => {
            out.value = 64u64.wrapping_sub(bit_sz);
            out.validate = true;
        }
        _ => return Err(format!("{kind:?} is not a field relocation")),
    }
    Ok(Calc::Value(out))
}

/// What to do to one instruction (libbpf's `bpf_core_relo_res`).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Resolution {
    orig: u64,
    new: u64,
    poison: Option<String>,
    validate: bool,
    orig_size: u64,
    new_size: u64,
    fail_size_adjust: bool,
}

fn calc(kind: CoreKind, local: &Spec<'_>, target: Option<&Spec<'_>>) -> Result<Resolution, String> {
    let mut res = Resolution {
        orig: 0,
        new: 0,
        poison: None,
        validate: true,
        orig_size: 0,
        new_size: 0,
        fail_size_adjust: false,
    };
    if kind.is_field() {
        let Calc::Value(l) = calc_field(kind, Some(local))? else {
            return Err("the local field cannot be computed".into());
        };
        res.orig = l.value;
        res.orig_size = l.size;
        res.validate = l.validate;
        match calc_field(kind, target)? {
            Calc::Poison(why) => res.poison = Some(why),
            Calc::Value(t) => {
                res.new = t.value;
                res.new_size = t.size;
                if res.orig_size != res.new_size
                    && let Some(target) = target
                {
                    let lt = type_of(local.btf, l.type_id)?;
                    let tt = type_of(target.btf, t.type_id)?;
                    let ok = match (lt.detail(), tt.detail()) {
                        (Detail::Ptr(_), Detail::Ptr(_)) => true,
                        (Detail::Int(a), Detail::Int(b)) => {
                            !a.encoding.is_signed() && !b.encoding.is_signed()
                        }
                        _ => false,
                    };
                    res.fail_size_adjust = !ok;
                }
            }
        }
    } else if kind.is_type() {
        let value = |spec: Option<&Spec<'_>>| -> Result<u64, String> {
            let Some(spec) = spec else { return Ok(0) };
            Ok(match kind {
                CoreKind::TypeIdTarget | CoreKind::TypeIdLocal => u64::from(spec.root.0),
                CoreKind::TypeExists | CoreKind::TypeMatches => 1,
                CoreKind::TypeSize => size_of(spec.btf, spec.root)?,
                _ => return Err(format!("{kind:?} is not a type relocation")),
            })
        };
        res.orig = value(Some(local))?;
        res.new = value(target)?;
        // The type id in the instruction may have changed when objects were linked.
        if kind == CoreKind::TypeIdTarget {
            res.validate = false;
        }
    } else {
        let value = |spec: Option<&Spec<'_>>| -> Result<Calc<u64>, String> {
            if kind == CoreKind::EnumvalExists {
                return Ok(Calc::Value(u64::from(spec.is_some())));
            }
            let Some(spec) = spec else {
                return Ok(Calc::Poison(
                    "the enumerator does not exist in the target".into(),
                ));
            };
            let acc = spec.acc.first().ok_or("empty access path")?;
            let t = type_of(spec.btf, acc.type_id)?;
            let v = match t.detail() {
                Detail::Enum(e) | Detail::Enum64(e) => e.values.clone().nth(acc.idx as usize),
                _ => None,
            }
            .ok_or("enumerator out of range")?;
            // A 32-bit enumerator is stored as `__s32`: its value is sign-extended.
            Ok(Calc::Value(match t.kind() {
                Kind::Enum => u64::from_ne_bytes(v.as_i64().to_ne_bytes()),
                _ => v.raw(),
            }))
        };
        let Calc::Value(orig) = value(Some(local))? else {
            return Err("the local enumerator cannot be computed".into());
        };
        res.orig = orig;
        match value(target)? {
            Calc::Value(v) => res.new = v,
            Calc::Poison(why) => res.poison = Some(why),
        }
    }
    Ok(res)
}

/// Resolves one relocation against the target: the local value, the target value and
/// how to patch.
fn resolve(
    relo: &CoreRelocation,
    kind: CoreKind,
    local_btf: &Btf<'_>,
    target: &CoreTarget<'_>,
) -> Result<Resolution, String> {
    let local = parse_spec(local_btf, relo.type_id, &relo.access, kind)?;
    if kind == CoreKind::TypeIdLocal {
        let id = u64::from(relo.type_id.0);
        return Ok(Resolution {
            orig: id,
            new: id,
            poison: None,
            validate: true,
            orig_size: 0,
            new_size: 0,
            fail_size_adjust: false,
        });
    }
    let local_t = type_of(local_btf, relo.type_id)?;
    let name = local_t.name().map_err(|e| e.to_string())?;
    if name.is_empty() {
        return Err("the relocated type is anonymous, so no target type can be found".into());
    }
    let mut chosen: Option<(Spec<'_>, Resolution)> = None;
    for cand in target.candidates(&local_t, name) {
        let Some(spec) = match_spec(&local, kind, target.btf(), cand)? else {
            continue;
        };
        let res = calc(kind, &local, Some(&spec))?;
        match &chosen {
            None => chosen = Some((spec, res)),
            Some((first, first_res)) => {
                if spec.bit_offset != first.bit_offset {
                    return Err(format!(
                        "target types [{}] and [{}] both match with different field offsets ({} and {} bits)",
                        first.root.0, spec.root.0, first.bit_offset, spec.bit_offset
                    ));
                }
                if res.poison.is_some() != first_res.poison.is_some() || res.new != first_res.new {
                    return Err(format!(
                        "target types [{}] and [{}] both match with different values ({} and {})",
                        first.root.0, spec.root.0, first_res.new, res.new
                    ));
                }
            }
        }
    }
    match chosen {
        Some((_, res)) => Ok(res),
        None => calc(kind, &local, None),
    }
}

const CLASS_LD: u8 = 0x00;
const CLASS_LDX: u8 = 0x01;
const CLASS_ST: u8 = 0x02;
const CLASS_STX: u8 = 0x03;
const CLASS_ALU: u8 = 0x04;
const CLASS_ALU64: u8 = 0x07;

fn poison(insns: &mut [Insn], at: usize) {
    let ld_imm64 = insns.get(at).is_some_and(|i| i.is_ld_imm64());
    let call = Insn::new(CALL, 0, 0, 0, POISON_HELPER);
    if ld_imm64 && let Some(second) = insns.get_mut(at + 1) {
        *second = call;
    }
    if let Some(first) = insns.get_mut(at) {
        *first = call;
    }
}

fn set(insns: &mut [Insn], at: usize, f: impl FnOnce(&mut Insn)) {
    if let Some(insn) = insns.get_mut(at) {
        f(insn);
    }
}

fn mem_size_bytes(code: u8) -> u64 {
    match code & 0x18 {
        0x00 => 4,
        0x08 => 2,
        0x10 => 1,
        _ => 8,
    }
}

fn mem_size_bits(bytes: u64) -> Option<u8> {
    Some(match bytes {
        4 => 0x00,
        2 => 0x08,
        1 => 0x10,
        8 => 0x18,
        _ => return None,
    })
}

/// Writes a resolution into instruction `at` (libbpf's `bpf_core_patch_insn`);
/// `Ok(Some(why))` when the instruction was poisoned instead.
fn patch(insns: &mut [Insn], at: usize, res: &Resolution) -> Result<Option<String>, String> {
    let insn = *insns.get(at).ok_or("instruction out of range")?;
    if let Some(why) = &res.poison {
        poison(insns, at);
        return Ok(Some(why.clone()));
    }
    let sext = |v: i64| u64::from_ne_bytes(v.to_ne_bytes());
    let (orig, new) = (res.orig, res.new);
    let class = insn.code & 0x07;
    match class {
        CLASS_ALU | CLASS_ALU64 => {
            if insn.code & 0x08 != 0 {
                return Err("ALU instruction with a register source".into());
            }
            if res.validate && sext(i64::from(insn.imm)) != orig {
                return Err(format!(
                    "instruction holds {}, expected {orig} (the object's own value)",
                    insn.imm
                ));
            }
            #[expect(
                clippy::cast_possible_truncation,
                reason = "the kernel keeps the low 32 bits, as libbpf writes them"
            )]
            let imm = new as u32;
            set(insns, at, |i| i.imm = i32::from_ne_bytes(imm.to_ne_bytes()));
        }
        CLASS_LDX | CLASS_ST | CLASS_STX => {
            if res.validate && sext(i64::from(insn.off)) != orig {
                return Err(format!(
                    "memory instruction offset is {}, expected {orig} (the object's own value)",
                    insn.off
                ));
            }
            let off = i16::try_from(new)
                .map_err(|_| format!("field offset {new} does not fit an instruction offset"))?;
            if res.fail_size_adjust {
                poison(insns, at);
                return Ok(Some(format!(
                    "the field is {} bytes in the target, {} in the object, and only pointers and unsigned integers can be read at another size",
                    res.new_size, res.orig_size
                )));
            }
            let mut code = insn.code;
            if res.new_size != res.orig_size {
                if mem_size_bytes(code) != res.orig_size {
                    return Err(format!(
                        "memory instruction accesses {} bytes, expected {}",
                        mem_size_bytes(code),
                        res.orig_size
                    ));
                }
                let bits = mem_size_bits(res.new_size)
                    .ok_or_else(|| format!("no load or store of {} bytes", res.new_size))?;
                code = (code & 0xe0) | bits | class;
            }
            set(insns, at, |i| {
                i.off = off;
                i.code = code;
            });
        }
        CLASS_LD => {
            let second = insns.get(at + 1).copied();
            let ok = insn.is_ld_imm64()
                && insn.src() == 0
                && insn.off == 0
                && second.is_some_and(|s| s.code == 0 && s.regs == 0 && s.off == 0);
            let Some(second) = second.filter(|_| ok) else {
                return Err("ld_imm64 of an unexpected form".into());
            };
            let lo = u64::from(u32::from_ne_bytes(insn.imm.to_ne_bytes()));
            let hi = u64::from(u32::from_ne_bytes(second.imm.to_ne_bytes()));
            let imm = lo | (hi << 32);
            if res.validate && imm != orig {
                return Err(format!(
                    "ld_imm64 holds {imm}, expected {orig} (the object's own value)"
                ));
            }
            #[expect(clippy::cast_possible_truncation, reason = "split into halves")]
            let (lo, hi) = (new as u32, (new >> 32) as u32);
            set(insns, at, |i| i.imm = i32::from_ne_bytes(lo.to_ne_bytes()));
            set(insns, at + 1, |i| {
                i.imm = i32::from_ne_bytes(hi.to_ne_bytes())
            });
        }
        _ => {
            return Err(format!(
                "cannot relocate instruction with opcode {:#04x}",
                insn.code
            ));
        }
    }
    Ok(None)
}

/// The instructions of `program` with every CO-RE relocation applied against `target`,
/// `local` being the object's BTF, and what each relocation did.
///
/// # Errors
/// A relocation is malformed (bad access string, out of range instruction), its
/// instruction does not hold the value the object's BTF gives, or several target types
/// match with different results: the same relocations libbpf refuses.
pub fn apply_core(
    program: &ProgramSpec,
    local: &Btf<'_>,
    target: &CoreTarget<'_>,
) -> Result<(Vec<Insn>, Vec<CoreOutcome>), CoreError> {
    let mut insns = program.insns.clone();
    let mut outcomes = Vec::with_capacity(program.core_relocations.len());
    for (index, relo) in program.core_relocations.iter().enumerate() {
        let err = |reason: String| CoreError {
            program: program.name.clone(),
            index,
            insn: relo.insn,
            kind: relo.kind_name(),
            type_id: relo.type_id.0,
            access: relo.access.clone(),
            reason,
        };
        let kind = CoreKind::from_raw(relo.kind)
            .ok_or_else(|| err(format!("unknown relocation kind {}", relo.kind)))?;
        let res = resolve(relo, kind, local, target).map_err(&err)?;
        let at = relo.insn as usize;
        let poisoned = patch(&mut insns, at, &res).map_err(&err)?.map(|why| {
            format!(
                "{} of {}: {why}",
                relo.kind_name(),
                describe(local, relo, kind)
            )
        });
        outcomes.push(CoreOutcome {
            index,
            insn: relo.insn,
            kind,
            local: res.orig,
            target: poisoned.is_none().then_some(res.new),
            poisoned,
        });
    }
    Ok((insns, outcomes))
}

/// What a relocation refers to in the object's own BTF, as a reader names it: the
/// root type and the member path (`struct task_struct.se.vruntime`), an enumerator
/// (`enum e::VALUE`), or the type (`struct s`).
fn describe(local: &Btf<'_>, relo: &CoreRelocation, kind: CoreKind) -> String {
    let root = match skip_mods(local, relo.type_id) {
        Ok((_, Some(t))) => {
            let word = match t.kind() {
                Kind::Struct => "struct ",
                Kind::Union => "union ",
                Kind::Enum | Kind::Enum64 => "enum ",
                _ => "",
            };
            format!(
                "{word}{}",
                t.name().ok().filter(|n| !n.is_empty()).unwrap_or("(anon)")
            )
        }
        _ => format!("type [{}]", relo.type_id.0),
    };
    let Ok(spec) = parse_spec(local, relo.type_id, &relo.access, kind) else {
        return format!("{root} (access {})", relo.access);
    };
    let names: Vec<&str> = spec.acc.iter().filter_map(|a| a.name).collect();
    match (kind.is_enumval(), names.as_slice()) {
        (_, []) => root,
        (true, [value, ..]) => format!("{root}::{value}"),
        (false, path) => format!("{root}.{}", path.join(".")),
    }
}

#[cfg(test)]
mod tests;
