//! Maps declared `LIBBPF_PIN_BY_NAME`: opened from and pinned under the pin root through
//! `handover-bpffs`, and reused only when the pinned map is the one this load would
//! create, down to the BTF layout of its key and value where both sides have one.

use handover_bpffs::{PinPath, PinRoot};
use handover_btf::{Btf, TypeId};
use handover_loader::MapSpec;
use handover_plan::{FieldAction, Side, TypeLayout, layout_of, map_layout, same_layout};
use handover_sys::{self as sys, Bpf, OpenFlags};
use std::os::fd::{AsFd, OwnedFd};

use crate::LoadError;

/// The pin path of `spec` under the pin root: its name.
fn pin_path(spec: &MapSpec) -> Result<PinPath, LoadError> {
    PinPath::new(&spec.name).map_err(|source| LoadError::Pin {
        map: spec.name.clone(),
        what: "naming its pin (LIBBPF_PIN_BY_NAME)",
        source: Box::new(source),
    })
}

/// The map pinned under `spec`'s name in `root`, `None` when nothing is pinned there.
pub(crate) fn open(root: &PinRoot, spec: &MapSpec) -> Result<Option<OwnedFd>, LoadError> {
    match root.get(&pin_path(spec)?, OpenFlags::READ_WRITE) {
        Ok(fd) => Ok(Some(fd)),
        Err(e) if e.errno() == Some(sys::errno::ENOENT) => Ok(None),
        Err(source) => Err(LoadError::Pin {
            map: spec.name.clone(),
            what: "opening its pin (LIBBPF_PIN_BY_NAME)",
            source: Box::new(source),
        }),
    }
}

/// Pins the map `fd`, created for `spec`, under its name in `root` (never over a pin
/// that appeared meanwhile).
pub(crate) fn pin(root: &PinRoot, spec: &MapSpec, fd: impl AsFd) -> Result<(), LoadError> {
    root.pin(fd, &pin_path(spec)?)
        .map_err(|source| LoadError::Pin {
            map: spec.name.clone(),
            what: "pinning it by name (LIBBPF_PIN_BY_NAME)",
            source: Box::new(source),
        })
}

/// The raw BTF of the kernel's BTF object `id` (`BPF_BTF_GET_FD_BY_ID`, then its data).
pub(crate) fn kernel_btf(bpf: &Bpf, id: u32) -> Result<Vec<u8>, sys::Error> {
    let fd = bpf.fd_by_id(sys::ObjectKind::Btf, id, OpenFlags::READ_ONLY)?;
    bpf.btf_data(&fd)
}

/// How the key and value layouts of the pinned map `info` differ from those of `spec`
/// in `ours` (the BTF this load gives the kernel), compared as the plan compares
/// layouts (`same_layout`, then the field mapping for the details). A side is compared
/// only when both maps carry BTF for it.
///
/// # Errors
/// The pinned map's BTF cannot be read from the kernel.
pub(crate) fn layout_differences(
    bpf: &Bpf,
    info: &sys::MapInfo,
    spec: &MapSpec,
    ours: &Btf<'_>,
) -> Result<Vec<String>, LoadError> {
    let sides = [
        (
            Side::Key,
            info.btf_key_type_id,
            spec.key_type,
            (info.key_size, spec.key_size),
        ),
        (
            Side::Value,
            info.btf_value_type_id,
            spec.value_type,
            (info.value_size, spec.value_size),
        ),
    ];
    let known = |&(_, theirs, ours, _): &(Side, u32, Option<TypeId>, (u32, u32))| {
        theirs != 0 && ours.is_some_and(|t| t.0 != 0)
    };
    if info.btf_id == 0 || !sides.iter().any(known) {
        return Ok(Vec::new());
    }
    let data = kernel_btf(bpf, info.btf_id).map_err(|source| LoadError::MapInit {
        map: spec.name.clone(),
        what: format!(
            "reading the BTF (id {}) of the map pinned under its name",
            info.btf_id
        ),
        source,
    })?;
    let theirs_btf = match Btf::parse(&data) {
        Ok(btf) => btf,
        Err(e) => {
            return Ok(vec![format!(
                "its BTF (id {}) does not parse: {e}",
                info.btf_id
            )]);
        }
    };
    let mut diffs = Vec::new();
    for (side, theirs, ours_id, sizes) in sides.into_iter().filter(|s| known(s)) {
        let name = match side {
            Side::Key => "key",
            Side::Value => "value",
        };
        let layouts = (
            layout_of(&theirs_btf, TypeId(theirs)),
            ours_id.map(|id| layout_of(ours, id)),
        );
        match layouts {
            (Ok(theirs), Some(Ok(ours))) => {
                if let Some(d) = difference(name, side, &theirs, &ours, sizes) {
                    diffs.push(d);
                }
            }
            (Err(e), _) => diffs.push(format!("its {name} layout cannot be read: {e}")),
            (_, Some(Err(e))) => diffs.push(format!("the object's {name} layout: {e}")),
            (_, None) => {}
        }
    }
    Ok(diffs)
}

/// The difference between the pinned layout `theirs` and the object's `ours` of one
/// side, `None` when they give the same bytes the same meaning.
fn difference(
    name: &str,
    side: Side,
    theirs: &TypeLayout,
    ours: &TypeLayout,
    (their_size, our_size): (u32, u32),
) -> Option<String> {
    if same_layout(theirs, ours) {
        return None;
    }
    let fields: Vec<String> = map_layout(theirs, ours, their_size, our_size, side)
        .fields
        .iter()
        .filter(|f| f.action != FieldAction::Copy)
        .map(|f| {
            let path = if f.path.is_empty() {
                "(whole)"
            } else {
                &f.path
            };
            format!("{path} {}", f.action.as_str())
        })
        .collect();
    Some(format!(
        "{name} layout {} (object: {}){}",
        theirs.describe(),
        ours.describe(),
        if fields.is_empty() {
            String::new()
        } else {
            format!(": {}", fields.join(", "))
        }
    ))
}
