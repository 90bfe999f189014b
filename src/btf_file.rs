//! Finding the BTF blob in a file: a raw blob as is, or the `.BTF` section of an ELF
//! object.

use object::{Object, ObjectSection};

/// Why no BTF blob could be taken from a file.
#[derive(Debug)]
#[non_exhaustive]
pub enum BtfFileError {
    /// The file is an ELF object that could not be read.
    Elf(object::Error),
    /// The ELF object has no `.BTF` section.
    NoBtfSection,
}

impl std::fmt::Display for BtfFileError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Elf(e) => write!(f, "cannot read the ELF object: {e}"),
            Self::NoBtfSection => f.write_str("the ELF object has no .BTF section"),
        }
    }
}

impl std::error::Error for BtfFileError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Elf(e) => Some(e),
            Self::NoBtfSection => None,
        }
    }
}

/// The BTF bytes of `data`: its `.BTF` section if it is an ELF object, else `data`.
///
/// # Errors
/// An ELF object that cannot be read or has no `.BTF` section.
pub fn btf_bytes(data: &[u8]) -> Result<&[u8], BtfFileError> {
    if !data.starts_with(b"\x7fELF") {
        return Ok(data);
    }
    let file = object::File::parse(data).map_err(BtfFileError::Elf)?;
    let section = file
        .section_by_name(".BTF")
        .ok_or(BtfFileError::NoBtfSection)?;
    section.data().map_err(BtfFileError::Elf)
}
