//! `KEY.encoding`: how provisioning tools store binary or large values in guestinfo, which
//! holds text without NULs. One spelling table for every tool in the field, and the decoder
//! (with the `encoding` feature) that bounds what it inflates.

use crate::{ErrorKind, VmwError};

/// What a `KEY.encoding` value asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Encoding {
    /// Absent, empty or blank: the value as stored.
    Raw,
    /// `base64`, `b64`.
    Base64,
    /// `gzip+base64`, `gz+base64`, `gzip+b64`, `gz+b64`.
    GzipBase64,
    /// `gzip`, `gz` (Ignition): gzip bytes stored as they are.
    Gzip,
}

impl Encoding {
    /// The encoding an `KEY.encoding` value names, in any case; blank means raw (cloud-init
    /// writes `" "` when it clears a key).
    pub(super) fn parse(name: Option<&[u8]>) -> Result<Encoding, VmwError> {
        let name = name.unwrap_or_default();
        let start = name
            .iter()
            .position(|b| !b.is_ascii_whitespace())
            .unwrap_or(name.len());
        let end = name
            .iter()
            .rposition(|b| !b.is_ascii_whitespace())
            .map_or(start, |i| i + 1);
        let name = &name[start..end];
        let is = |spellings: &[&str]| {
            spellings
                .iter()
                .any(|s| name.eq_ignore_ascii_case(s.as_bytes()))
        };
        Ok(if name.is_empty() {
            Encoding::Raw
        } else if is(&["base64", "b64"]) {
            Encoding::Base64
        } else if is(&["gzip+base64", "gz+base64", "gzip+b64", "gz+b64"]) {
            Encoding::GzipBase64
        } else if is(&["gzip", "gz"]) {
            Encoding::Gzip
        } else {
            return Err(VmwError::new(
                ErrorKind::Decode,
                format_args!(
                    "unknown guestinfo encoding \"{}\" (known: base64, b64, gzip+base64, \
                     gz+base64, gzip+b64, gz+b64, gzip, gz)",
                    name.escape_ascii()
                ),
            ));
        })
    }

    /// Decodes `value`; the result may be at most `cap` bytes.
    pub(super) fn decode(self, value: Vec<u8>, cap: usize) -> Result<Vec<u8>, VmwError> {
        match self {
            Encoding::Raw => Ok(value),
            Encoding::Base64 => codec::base64(&value),
            Encoding::GzipBase64 => {
                let gzip = codec::base64(&value)?;
                drop(value);
                codec::gunzip(&gzip, cap)
            }
            Encoding::Gzip => codec::gunzip(&value, cap),
        }
    }
}

#[cfg(feature = "encoding")]
mod codec {
    use std::io::Read as _;

    use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
    use base64::Engine;

    use crate::{ErrorKind, VmwError};

    /// The standard alphabet, padding optional: values come from people and shell tools.
    const BASE64: GeneralPurpose = GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
    );

    /// Base64 with the line breaks and spaces of `base64(1)` output ignored.
    pub(super) fn base64(text: &[u8]) -> Result<Vec<u8>, VmwError> {
        let compact: Vec<u8> = text
            .iter()
            .copied()
            .filter(|b| !b.is_ascii_whitespace())
            .collect();
        BASE64.decode(compact).map_err(|e| {
            VmwError::new(
                ErrorKind::Decode,
                format_args!("the value is not base64: {e}"),
            )
        })
    }

    /// Inflates gzip data (several members, as `cat a.gz b.gz` makes, included). Output
    /// past `cap` bytes is an error as soon as it appears, and the buffer never grows past
    /// `cap`, so a bomb costs at most that much memory.
    pub(super) fn gunzip(data: &[u8], cap: usize) -> Result<Vec<u8>, VmwError> {
        let mut gz = flate2::read::MultiGzDecoder::new(data);
        let mut out = Vec::new();
        let mut chunk = [0u8; 16 << 10];
        loop {
            let n = gz.read(&mut chunk).map_err(|e| {
                VmwError::new(
                    ErrorKind::Decode,
                    format_args!("the value is not gzip data: {e}"),
                )
            })?;
            if n == 0 {
                return Ok(out);
            }
            if n > cap - out.len() {
                return Err(VmwError::new(
                    ErrorKind::TooLarge,
                    format_args!(
                        "the value inflates to more than {cap} bytes, the channel's reply cap \
                         (set_max_reply_len)"
                    ),
                ));
            }
            if out.capacity() - out.len() < n {
                // Doubling, but never past the cap.
                out.reserve_exact(out.capacity().max(n).min(cap - out.len()));
            }
            out.extend_from_slice(&chunk[..n]);
        }
    }
}

#[cfg(not(feature = "encoding"))]
mod codec {
    use crate::{ErrorKind, VmwError};

    fn without_feature() -> VmwError {
        VmwError::new(
            ErrorKind::Unsupported,
            "the value is encoded; decoding needs vmw_backdoor's `encoding` feature",
        )
    }

    pub(super) fn base64(_: &[u8]) -> Result<Vec<u8>, VmwError> {
        Err(without_feature())
    }

    pub(super) fn gunzip(_: &[u8], _: usize) -> Result<Vec<u8>, VmwError> {
        Err(without_feature())
    }
}

#[cfg(test)]
mod tests {
    use super::Encoding;
    use crate::ErrorKind;

    #[test]
    fn every_spelling_in_the_field_is_known_in_any_case() {
        let cases: [(&[u8], Encoding); 12] = [
            (b"", Encoding::Raw),
            (b" ", Encoding::Raw),
            (b"base64", Encoding::Base64),
            (b"B64", Encoding::Base64),
            (b"Base64\n", Encoding::Base64),
            (b"gzip+base64", Encoding::GzipBase64),
            (b"GZ+BASE64", Encoding::GzipBase64),
            (b"gzip+b64", Encoding::GzipBase64),
            (b"gz+b64", Encoding::GzipBase64),
            (b"gzip", Encoding::Gzip),
            (b"gz", Encoding::Gzip),
            (b"GZip", Encoding::Gzip),
        ];
        for (name, want) in cases {
            assert_eq!(
                Encoding::parse(Some(name)).unwrap(),
                want,
                "{}",
                name.escape_ascii()
            );
        }
        assert_eq!(Encoding::parse(None).unwrap(), Encoding::Raw);
        let e = Encoding::parse(Some(b"yaml")).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Decode);
        assert!(e.to_string().contains("\"yaml\""), "{e}");
    }
}
