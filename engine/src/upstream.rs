//! Everything the engine takes from the pure pipeline (specs, snapshot, diff and
//! conversion), in one place: these are the crate's only imports of it, so moving the
//! pipeline to its own crate changes this file alone.

pub use handover_plan::{
    ConversionPlan, ConvertError, FieldLoc, FieldMapping, KernelEnv, LayoutHint, MapModel,
    MergeRule, ModelOptions, Policy, Side, Verdict, convert, diff_maps, map_model,
    object_model_with, reverse,
};
