//! S3's additional checksums (`x-amz-checksum-crc32`, `-crc32c`, `-crc64nvme`, `-sha1`,
//! `-sha256`): computed while a body streams to disk, compared with the one the client
//! sent (`BadDigest` when they differ), stored with the object or part, and combined for a
//! multipart object into S3's composite checksum (the checksum of the parts' checksums,
//! `VALUE-N`).

use crate::{ObjectError, Result};
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use sha1::Digest as _;

/// A checksum algorithm S3 knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ChecksumAlgorithm {
    Crc32,
    Crc32c,
    Crc64Nvme,
    Sha1,
    Sha256,
}

impl ChecksumAlgorithm {
    pub const ALL: [ChecksumAlgorithm; 5] = [
        Self::Crc32,
        Self::Crc32c,
        Self::Crc64Nvme,
        Self::Sha1,
        Self::Sha256,
    ];

    /// S3's name (`x-amz-checksum-algorithm`, `x-amz-sdk-checksum-algorithm`), any case.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|a| a.name().eq_ignore_ascii_case(name))
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Crc32 => "CRC32",
            Self::Crc32c => "CRC32C",
            Self::Crc64Nvme => "CRC64NVME",
            Self::Sha1 => "SHA1",
            Self::Sha256 => "SHA256",
        }
    }

    /// Bytes of a digest.
    fn len(self) -> usize {
        match self {
            Self::Crc32 | Self::Crc32c => 4,
            Self::Crc64Nvme => 8,
            Self::Sha1 => 20,
            Self::Sha256 => 32,
        }
    }

    pub(crate) fn hasher(self) -> Hasher {
        use crc_fast::CrcAlgorithm as C;
        match self {
            Self::Crc32 => Hasher::Crc(crc_fast::Digest::new(C::Crc32IsoHdlc), 4),
            Self::Crc32c => Hasher::Crc(crc_fast::Digest::new(C::Crc32Iscsi), 4),
            Self::Crc64Nvme => Hasher::Crc(crc_fast::Digest::new(C::Crc64Nvme), 8),
            Self::Sha1 => Hasher::Sha1(sha1::Sha1::new()),
            Self::Sha256 => Hasher::Sha256(sha2::Sha256::new()),
        }
    }

    /// The digest of `data` (for composite checksums).
    fn digest(self, data: &[u8]) -> Vec<u8> {
        let mut h = self.hasher();
        h.update(data);
        h.finalize()
    }
}

/// A running checksum.
pub(crate) enum Hasher {
    /// A CRC and its width in bytes.
    Crc(crc_fast::Digest, usize),
    Sha1(sha1::Sha1),
    Sha256(sha2::Sha256),
}

impl Hasher {
    pub(crate) fn update(&mut self, data: &[u8]) {
        match self {
            Self::Crc(d, _) => d.update(data),
            Self::Sha1(h) => h.update(data),
            Self::Sha256(h) => h.update(data),
        }
    }

    /// The digest bytes (CRCs big-endian, as S3 encodes them).
    pub(crate) fn finalize(self) -> Vec<u8> {
        match self {
            Self::Crc(d, width) => d.finalize().to_be_bytes()[8 - width..].to_vec(),
            Self::Sha1(h) => h.finalize().to_vec(),
            Self::Sha256(h) => h.finalize().to_vec(),
        }
    }
}

/// A stored checksum.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checksum {
    pub algorithm: ChecksumAlgorithm,
    /// Base64 of the digest; a composite one ends in `-N` (N parts).
    pub value: String,
    /// S3's `x-amz-checksum-type`: `FULL_OBJECT` (false) or `COMPOSITE` (true).
    #[serde(default)]
    pub composite: bool,
}

impl Checksum {
    fn full(algorithm: ChecksumAlgorithm, digest: &[u8]) -> Self {
        Self {
            algorithm,
            value: base64::engine::general_purpose::STANDARD.encode(digest),
            composite: false,
        }
    }

    /// The composite checksum of a multipart object: the digest of the parts' digests, in
    /// order, then `-N`; `None` unless every part has a full checksum of one algorithm.
    pub fn composite(parts: &[Option<&Checksum>]) -> Option<Checksum> {
        let algorithm = parts.first()?.as_ref()?.algorithm;
        let mut joined = Vec::new();
        for part in parts {
            let c = part.filter(|c| c.algorithm == algorithm && !c.composite)?;
            joined.extend(decode(algorithm, &c.value)?);
        }
        let digest = algorithm.digest(&joined);
        Some(Checksum {
            algorithm,
            value: format!(
                "{}-{}",
                base64::engine::general_purpose::STANDARD.encode(digest),
                parts.len()
            ),
            composite: true,
        })
    }
}

fn decode(algorithm: ChecksumAlgorithm, value: &str) -> Option<Vec<u8>> {
    base64::engine::general_purpose::STANDARD
        .decode(value.trim())
        .ok()
        .filter(|d| d.len() == algorithm.len())
}

/// What a writer says about the checksum of its bytes: the algorithm to compute, and the
/// value (base64) the bytes must have, when it sent one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChecksumRequest {
    pub algorithm: ChecksumAlgorithm,
    pub expected: Option<String>,
}

impl ChecksumRequest {
    /// `InvalidRequest` when the expected value is not base64 of a digest of the
    /// algorithm's size, as S3 (checked before the body is read).
    pub fn validate(&self) -> Result<()> {
        match &self.expected {
            Some(v) if decode(self.algorithm, v).is_none() => {
                Err(ObjectError::InvalidRequest(format!(
                    "Value for x-amz-checksum-{} header is invalid.",
                    self.algorithm.name().to_ascii_lowercase()
                )))
            }
            _ => Ok(()),
        }
    }

    /// The checksum of bytes whose digest is `digest`, or `BadDigest` when it is not the
    /// expected one.
    pub(crate) fn verify(&self, digest: &[u8]) -> Result<Checksum> {
        if let Some(expected) = &self.expected {
            if decode(self.algorithm, expected).as_deref() != Some(digest) {
                return Err(ObjectError::BadChecksum(self.algorithm.name()));
            }
        }
        Ok(Checksum::full(self.algorithm, digest))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(algorithm: ChecksumAlgorithm, data: &[u8]) -> String {
        base64::engine::general_purpose::STANDARD.encode(algorithm.digest(data))
    }

    #[test]
    fn known_values() {
        // The check values of each CRC ("123456789"), and SHA-256 of "abc".
        let crc = |a: ChecksumAlgorithm| hex::encode(a.digest(b"123456789"));
        assert_eq!(crc(ChecksumAlgorithm::Crc32), "cbf43926");
        assert_eq!(crc(ChecksumAlgorithm::Crc32c), "e3069283");
        assert_eq!(crc(ChecksumAlgorithm::Crc64Nvme), "ae8b14860a799888");
        assert_eq!(
            hex::encode(ChecksumAlgorithm::Sha1.digest(b"abc")),
            "a9993e364706816aba3e25717850c26c9cd0d89d"
        );
        assert_eq!(
            b64(ChecksumAlgorithm::Sha256, b"abc"),
            "ungWv48Bz+pBQUDeXa4iI7ADYaOWF3qctBD/YfIAFa0="
        );
        assert_eq!(
            ChecksumAlgorithm::parse("crc64nvme"),
            Some(ChecksumAlgorithm::Crc64Nvme)
        );
        assert_eq!(ChecksumAlgorithm::parse("md5"), None);
    }

    #[test]
    fn verify_and_validate() {
        let a = ChecksumAlgorithm::Crc32;
        let good = ChecksumRequest {
            algorithm: a,
            expected: Some(b64(a, b"data")),
        };
        assert!(good.validate().is_ok());
        assert_eq!(
            good.verify(&a.digest(b"data")).unwrap().value,
            b64(a, b"data")
        );
        assert!(matches!(
            good.verify(&a.digest(b"other")),
            Err(ObjectError::BadChecksum("CRC32"))
        ));
        let malformed = ChecksumRequest {
            algorithm: a,
            expected: Some(b64(ChecksumAlgorithm::Sha256, b"data")),
        };
        assert!(matches!(
            malformed.validate(),
            Err(ObjectError::InvalidRequest(m)) if m.contains("x-amz-checksum-crc32")
        ));
        let compute = ChecksumRequest {
            algorithm: a,
            expected: None,
        };
        assert!(compute.verify(&a.digest(b"x")).is_ok());
    }

    #[test]
    fn composite_is_the_checksum_of_the_part_checksums() {
        let a = ChecksumAlgorithm::Crc32c;
        let p1 = Checksum::full(a, &a.digest(b"part one"));
        let p2 = Checksum::full(a, &a.digest(b"part two"));
        let mut joined = a.digest(b"part one");
        joined.extend(a.digest(b"part two"));
        let c = Checksum::composite(&[Some(&p1), Some(&p2)]).unwrap();
        assert_eq!(c.value, format!("{}-2", b64(a, &joined)));
        assert!(c.composite);
        let other = Checksum::full(ChecksumAlgorithm::Crc32, &[0; 4]);
        assert_eq!(Checksum::composite(&[Some(&p1), Some(&other)]), None);
        assert_eq!(Checksum::composite(&[Some(&p1), None]), None);
        assert_eq!(Checksum::composite(&[]), None);
    }
}
