//! Objects read from files through a read-only memory map.
//!
//! # Safety
//! Mapping a file is `unsafe` because another process may change the file while it is
//! mapped. The parser treats the bytes as untrusted and never relies on them staying
//! the same between reads beyond Rust's memory safety of `&[u8]`; callers should open
//! objects they control (build outputs), as every BPF loader does.
#![allow(unsafe_code)]

use std::fs::File;
use std::path::{Path, PathBuf};

use memmap2::Mmap;

use crate::error::ObjectError;
use crate::object::{Object, ObjectOptions};

/// A BPF object file mapped into memory; [`ObjectFile::parse`] borrows from it.
#[derive(Debug)]
pub struct ObjectFile {
    path: PathBuf,
    map: Option<Mmap>,
}

impl ObjectFile {
    /// Opens and maps `path` read-only.
    ///
    /// # Errors
    /// [`ObjectError::Io`] if the file cannot be opened or mapped.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, ObjectError> {
        let path = path.as_ref().to_path_buf();
        let io = |source| ObjectError::Io {
            path: path.clone(),
            source,
        };
        let file = File::open(&path).map_err(io)?;
        let len = file.metadata().map_err(io)?.len();
        // An empty file cannot be mapped; it parses as an empty slice.
        let map = if len == 0 {
            None
        } else {
            // SAFETY: the map is read-only and private to this value; see the module
            // header for why concurrent modification cannot cause undefined behaviour
            // beyond reading changed bytes, which the parser already treats as untrusted.
            Some(unsafe { Mmap::map(&file) }.map_err(io)?)
        };
        Ok(Self { path, map })
    }

    /// The file's path.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The mapped bytes.
    #[must_use]
    pub fn data(&self) -> &[u8] {
        self.map.as_deref().unwrap_or(&[])
    }

    /// Parses the object; see [`Object::parse`].
    ///
    /// # Errors
    /// As [`Object::parse`].
    pub fn parse(&self) -> Result<Object<'_>, ObjectError> {
        Object::parse(self.data())
    }

    /// Parses the object with options; see [`Object::parse_with`].
    ///
    /// # Errors
    /// As [`Object::parse`].
    pub fn parse_with(&self, options: &ObjectOptions) -> Result<Object<'_>, ObjectError> {
        Object::parse_with(self.data(), options)
    }
}
