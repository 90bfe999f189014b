//! The conversion of one map's keys and values, from the plan's field mapping.

use super::error::MigrateError;
use super::plan::{ConversionPlan, ConversionProgram, Op, convert, convert_percpu};

/// How the keys and the values of one map are converted (from the diff's
/// [`LayoutMapping`](super::plan::LayoutMapping) of each).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conversion {
    /// Old key to new key.
    pub key: ConversionPlan,
    /// Old value (one CPU's) to new value.
    pub value: ConversionPlan,
    /// Number of per-CPU slots of a value (1 when the map is not per-CPU).
    pub cpus: usize,
    /// Whether values hold per-CPU slots.
    pub per_cpu: bool,
}

fn is_identity(plan: &ConversionPlan) -> bool {
    plan.old_size == plan.new_size
        && (plan.old_size == 0
            || plan.ops
                == [Op::Bytes {
                    src: 0,
                    dst: 0,
                    len: u64::from(plan.old_size),
                }])
}

impl Conversion {
    /// Keys and values carried unchanged.
    #[must_use]
    pub fn identity(key_size: u32, value_size: u32, cpus: usize, per_cpu: bool) -> Self {
        Self {
            key: ConversionPlan::identity(key_size),
            value: ConversionPlan::identity(value_size),
            cpus,
            per_cpu,
        }
    }

    /// Whether the values are carried byte for byte.
    #[must_use]
    pub fn value_is_identity(&self) -> bool {
        is_identity(&self.value)
    }

    /// The new key of old key `old`, appended to `out`.
    ///
    /// # Errors
    /// The key does not have the plan's size.
    pub fn key_into(&self, map: &str, old: &[u8], out: &mut Vec<u8>) -> Result<(), MigrateError> {
        if is_identity(&self.key) && old.len() == self.key.old_size as usize {
            out.extend_from_slice(old);
            return Ok(());
        }
        let k = convert(&self.key, old).map_err(|source| MigrateError::Convert {
            map: map.to_owned(),
            side: "key",
            source,
        })?;
        out.extend_from_slice(&k);
        Ok(())
    }

    /// The new value of old value `old` (all CPUs' slots for per-CPU maps), appended
    /// to `out`.
    ///
    /// # Errors
    /// The value does not have the plan's size.
    pub fn value_into(&self, map: &str, old: &[u8], out: &mut Vec<u8>) -> Result<(), MigrateError> {
        let err = |source| MigrateError::Convert {
            map: map.to_owned(),
            side: "value",
            source,
        };
        if self.value_is_identity() {
            let want = if self.per_cpu {
                (self.value.old_size as usize).next_multiple_of(8) * self.cpus
            } else {
                self.value.old_size as usize
            };
            if old.len() == want {
                out.extend_from_slice(old);
                return Ok(());
            }
        }
        let v = if self.per_cpu {
            convert_percpu(&self.value, old, self.cpus).map_err(err)?
        } else {
            convert(&self.value, old).map_err(err)?
        };
        out.extend_from_slice(&v);
        Ok(())
    }

    /// The new key of `old` as a vector.
    ///
    /// # Errors
    /// As [`Conversion::key_into`].
    pub fn key(&self, map: &str, old: &[u8]) -> Result<Vec<u8>, MigrateError> {
        let mut v = Vec::with_capacity(self.key.new_size as usize);
        self.key_into(map, old, &mut v)?;
        Ok(v)
    }

    /// The new value of `old` as a vector.
    ///
    /// # Errors
    /// As [`Conversion::value_into`].
    pub fn value(&self, map: &str, old: &[u8]) -> Result<Vec<u8>, MigrateError> {
        let mut v = Vec::new();
        self.value_into(map, old, &mut v)?;
        Ok(v)
    }
}

/// A [`Conversion`] compiled for the copy's hot loop: both sides as
/// [`ConversionProgram`]s, converting into caller buffers without allocating.
#[derive(Debug, Clone)]
pub(crate) struct Compiled {
    key: ConversionProgram,
    value: ConversionProgram,
    cpus: usize,
    per_cpu: bool,
    /// Bytes of a new value as the syscalls see it.
    pub new_value_len: usize,
}

impl Compiled {
    pub(crate) fn new(map: &str, c: &Conversion) -> Result<Self, MigrateError> {
        let compile = |plan, side| {
            ConversionProgram::compile(plan).map_err(|source| MigrateError::Convert {
                map: map.to_owned(),
                side,
                source,
            })
        };
        let key = compile(&c.key, "key")?;
        let value = compile(&c.value, "value")?;
        let len = |size: usize| {
            if c.per_cpu {
                size.next_multiple_of(8) * c.cpus
            } else {
                size
            }
        };
        Ok(Self {
            new_value_len: len(value.new_size()),
            key,
            value,
            cpus: c.cpus,
            per_cpu: c.per_cpu,
        })
    }

    /// Whether keys are carried byte for byte, and whether whole entries are (keys
    /// and shared values; a per-CPU value's slots are rewritten with zeroed padding,
    /// so it never counts).
    pub(crate) fn identities(&self) -> (bool, bool) {
        let key = self.key.is_identity();
        (key, key && !self.per_cpu && self.value.is_identity())
    }

    /// Bytes of a new key.
    pub(crate) fn new_key_size(&self) -> usize {
        self.key.new_size()
    }

    /// Converts old key `old` into `out` (the new key's size).
    pub(crate) fn key_into(
        &self,
        map: &str,
        old: &[u8],
        out: &mut [u8],
    ) -> Result<(), MigrateError> {
        self.key
            .run(old, out)
            .map_err(|source| MigrateError::Convert {
                map: map.to_owned(),
                side: "key",
                source,
            })
    }

    /// Converts old value `old` (every CPU's slot for per-CPU maps) into `out`.
    pub(crate) fn value_into(
        &self,
        map: &str,
        old: &[u8],
        out: &mut [u8],
    ) -> Result<(), MigrateError> {
        let r = if self.per_cpu {
            self.value.run_percpu(old, out, self.cpus)
        } else {
            self.value.run(old, out)
        };
        r.map_err(|source| MigrateError::Convert {
            map: map.to_owned(),
            side: "value",
            source,
        })
    }
}
