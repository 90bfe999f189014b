//! `Option<Vec<u8>>` as a lower-case hex string in JSON, for initial data bytes.

use serde::{Deserialize, Deserializer, Serializer};

#[expect(
    clippy::ref_option,
    reason = "serde's `with` passes a reference to the field"
)]
pub(crate) fn serialize<S: Serializer>(v: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(bytes) => {
            let mut out = String::with_capacity(bytes.len() * 2);
            for b in bytes {
                for nibble in [b >> 4, b & 0xf] {
                    out.extend(char::from_digit(u32::from(nibble), 16));
                }
            }
            s.serialize_some(&out)
        }
        None => s.serialize_none(),
    }
}

pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
    let Some(text) = Option::<String>::deserialize(d)? else {
        return Ok(None);
    };
    let digit = |c: u8| {
        char::from(c)
            .to_digit(16)
            .and_then(|v| u8::try_from(v).ok())
            .ok_or_else(|| {
                serde::de::Error::custom(format!("`{}` is not a hex digit", char::from(c)))
            })
    };
    let bytes = text.as_bytes();
    if bytes.len() % 2 != 0 {
        return Err(serde::de::Error::custom("hex string of odd length"));
    }
    bytes
        .chunks_exact(2)
        .map(|pair| match pair {
            [hi, lo] => Ok(digit(*hi)? << 4 | digit(*lo)?),
            _ => Err(serde::de::Error::custom("hex string of odd length")),
        })
        .collect::<Result<Vec<u8>, D::Error>>()
        .map(Some)
}
