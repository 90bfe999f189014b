//! [`MapAccess`] over an open kernel map ([`sys::Map`]).

use super::access::{Cursor, Geometry, MapAccess, Partial};
use super::sys::{Error, Map, MapType, UpdateFlags};

impl MapAccess for Map {
    fn kernel_map(&self) -> Option<&Map> {
        Some(self)
    }

    fn geometry(&self) -> Geometry {
        let info = self.info();
        let map_type = info.map_type.unwrap_or(MapType::Unspec);
        Geometry {
            map_type,
            key_size: self.key_size(),
            value_size: info.value_size as usize,
            value_len: self.value_len(),
            cpus: if map_type.is_per_cpu() {
                self.value_len() / (info.value_size as usize).next_multiple_of(8).max(1)
            } else {
                1
            },
            max_entries: info.max_entries,
        }
    }

    fn lookup_batch(
        &self,
        cursor: &mut Cursor,
        keys: &mut [u8],
        values: &mut [u8],
        flags: UpdateFlags,
    ) -> Result<usize, Error> {
        let (from, next) = cursor.kernel_args();
        let (n, done) = self.lookup_batch_once(from, next, keys, values, flags)?;
        cursor.advance(done);
        Ok(n)
    }

    fn update_batch(&self, keys: &[u8], values: &[u8], flags: UpdateFlags) -> Result<(), Partial> {
        self.update_batch_once(keys, values, flags)
            .map_err(|(done, error)| Partial { done, error })
    }

    fn delete_batch(&self, keys: &[u8]) -> Result<(), Partial> {
        self.delete_batch_once(keys)
            .map_err(|(done, error)| Partial { done, error })
    }

    fn lookup(&self, key: &[u8], value: &mut [u8], flags: UpdateFlags) -> Result<bool, Error> {
        Map::lookup(self, key, value, flags)
    }

    fn update(&self, key: &[u8], value: &[u8], flags: UpdateFlags) -> Result<(), Error> {
        Map::update(self, key, value, flags)
    }

    fn delete(&self, key: &[u8]) -> Result<bool, Error> {
        Map::delete(self, key)
    }

    fn next_key(&self, key: Option<&[u8]>, next: &mut [u8]) -> Result<bool, Error> {
        Map::next_key(self, key, next)
    }
}
