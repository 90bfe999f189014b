//! Specs: the map model, snapshots of it, the kernel's view of a spec and the layout
//! builder from BTF.

pub(crate) mod digest;
pub(crate) mod from_object;
pub(crate) mod hex;
pub(crate) mod kernel_view;
pub(crate) mod layout;
pub(crate) mod leaves;
pub(crate) mod model;
pub(crate) mod snapshot;
pub(crate) mod validate;
