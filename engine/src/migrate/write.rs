//! Writing and deleting packed entries, by batch where the kernel and map type have
//! it, else one by one.

use std::sync::atomic::{AtomicBool, Ordering};

use super::access::{MapAccess, batch_unsupported};
use super::error::{MigrateError, kernel};
use super::sys::UpdateFlags;

/// Writes into one map, remembering whether its batch commands were refused.
pub(crate) struct Writer<'m> {
    pub map: &'m dyn MapAccess,
    pub name: &'m str,
    pub flags: UpdateFlags,
    no_update_batch: AtomicBool,
    no_delete_batch: AtomicBool,
}

impl<'m> Writer<'m> {
    pub(crate) fn new(map: &'m dyn MapAccess, name: &'m str, lock: bool) -> Self {
        Self {
            map,
            name,
            flags: if lock {
                UpdateFlags::LOCK
            } else {
                UpdateFlags::ANY
            },
            no_update_batch: AtomicBool::new(false),
            no_delete_batch: AtomicBool::new(false),
        }
    }

    /// Whether updates went by batch.
    pub(crate) fn batched(&self) -> bool {
        !self.no_update_batch.load(Ordering::Relaxed)
    }

    /// Writes `n` packed entries (create or replace).
    pub(crate) fn update(&self, keys: &[u8], values: &[u8]) -> Result<(), MigrateError> {
        let g = self.map.geometry();
        let (ks, vl) = (g.key_size.max(1), g.value_len.max(1));
        if !self.no_update_batch.load(Ordering::Relaxed) {
            match self.map.update_batch(keys, values, self.flags) {
                Ok(()) => return Ok(()),
                // Refused as a command: write the elements one by one (any written
                // already are written again, which is harmless).
                Err(p) if p.done == 0 && batch_unsupported(&p.error) => {
                    self.no_update_batch.store(true, Ordering::Relaxed);
                }
                Err(p) => return Err(kernel(self.name, "writing entries by batch")(p.error)),
            }
        }
        for (k, v) in keys.chunks_exact(ks).zip(values.chunks_exact(vl)) {
            self.map
                .update(k, v, self.flags)
                .map_err(kernel(self.name, "writing an entry"))?;
        }
        Ok(())
    }

    /// Deletes packed `keys`; keys already gone are not an error.
    pub(crate) fn delete(&self, keys: &[u8]) -> Result<(), MigrateError> {
        let ks = self.map.geometry().key_size.max(1);
        let mut rest = keys;
        if !self.no_delete_batch.load(Ordering::Relaxed) {
            while !rest.is_empty() {
                match self.map.delete_batch(rest) {
                    Ok(()) => return Ok(()),
                    Err(p) if p.error.errno() == Some(libc::ENOENT) => {
                        // Skip the missing key and go on after it.
                        rest = rest.get((p.done + 1) * ks..).unwrap_or(&[]);
                    }
                    Err(p) if batch_unsupported(&p.error) => {
                        self.no_delete_batch.store(true, Ordering::Relaxed);
                        rest = rest.get(p.done * ks..).unwrap_or(&[]);
                        break;
                    }
                    Err(p) => return Err(kernel(self.name, "deleting entries by batch")(p.error)),
                }
            }
            if rest.is_empty() {
                return Ok(());
            }
        }
        for k in rest.chunks_exact(ks) {
            self.map
                .delete(k)
                .map_err(kernel(self.name, "deleting an entry"))?;
        }
        Ok(())
    }
}
