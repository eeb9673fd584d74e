//! S3's additional checksums between `s3s`'s DTOs and the object store: the one a writer
//! asks for (`x-amz-checksum-ALG`, `x-amz-sdk-checksum-algorithm`) and the one an object,
//! a part or a completed upload answers with.

use nimbus_objects::{Checksum, ChecksumAlgorithm, ChecksumRequest};
use s3s::{s3_error, S3Result};

/// The checksum a writer asks for, from the algorithm header and the five value headers
/// (in [`ChecksumAlgorithm::ALL`]'s order); at most one value, as S3.
pub(crate) fn request(
    algorithm: Option<&str>,
    values: [Option<&str>; 5],
) -> S3Result<Option<ChecksumRequest>> {
    let mut given = ChecksumAlgorithm::ALL
        .into_iter()
        .zip(values)
        .filter_map(|(a, v)| v.map(|v| (a, v)));
    let first = given.next();
    if given.next().is_some() {
        return Err(s3_error!(
            InvalidRequest,
            "Expecting a single x-amz-checksum- header. Multiple checksum Types are not allowed."
        ));
    }
    if let Some((algorithm, value)) = first {
        let req = ChecksumRequest {
            algorithm,
            expected: Some(value.to_string()),
        };
        req.validate().map_err(crate::errors::s3_error)?;
        return Ok(Some(req));
    }
    let Some(name) = algorithm else {
        return Ok(None);
    };
    let algorithm = ChecksumAlgorithm::parse(name).ok_or_else(|| {
        s3_error!(
            InvalidRequest,
            "Checksum algorithm provided is unsupported. Please try again with any of the valid \
             types: [CRC32, CRC32C, CRC64NVME, SHA1, SHA256]"
        )
    })?;
    Ok(Some(ChecksumRequest {
        algorithm,
        expected: None,
    }))
}

/// `checksums::request` over a DTO with S3's checksum fields (PutObject, UploadPart).
macro_rules! request_of {
    ($i:expr) => {
        $crate::checksums::request(
            $i.checksum_algorithm.as_ref().map(|a| a.as_str()),
            [
                $i.checksum_crc32.as_deref(),
                $i.checksum_crc32c.as_deref(),
                $i.checksum_crc64nvme.as_deref(),
                $i.checksum_sha1.as_deref(),
                $i.checksum_sha256.as_deref(),
            ],
        )
    };
}
pub(crate) use request_of;

/// Sets the `checksum_*` field of `checksum`'s algorithm on an output DTO.
macro_rules! fill {
    ($out:expr, $checksum:expr) => {
        if let Some(c) = $checksum {
            let v = Some(c.value.clone());
            match c.algorithm {
                nimbus_objects::ChecksumAlgorithm::Crc32 => $out.checksum_crc32 = v,
                nimbus_objects::ChecksumAlgorithm::Crc32c => $out.checksum_crc32c = v,
                nimbus_objects::ChecksumAlgorithm::Crc64Nvme => $out.checksum_crc64nvme = v,
                nimbus_objects::ChecksumAlgorithm::Sha1 => $out.checksum_sha1 = v,
                nimbus_objects::ChecksumAlgorithm::Sha256 => $out.checksum_sha256 = v,
            }
        }
    };
}
pub(crate) use fill;

/// `x-amz-checksum-type` of a stored checksum.
pub(crate) fn kind(c: &Checksum) -> s3s::dto::ChecksumType {
    s3s::dto::ChecksumType::from_static(if c.composite {
        s3s::dto::ChecksumType::COMPOSITE
    } else {
        s3s::dto::ChecksumType::FULL_OBJECT
    })
}

/// Whether a read asked for checksums (`x-amz-checksum-mode: ENABLED`).
pub(crate) fn enabled(mode: Option<&s3s::dto::ChecksumMode>) -> bool {
    mode.is_some_and(|m| {
        m.as_str()
            .eq_ignore_ascii_case(s3s::dto::ChecksumMode::ENABLED)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_value_or_an_algorithm() {
        let crc = "AAAAAA==";
        let r = request(None, [Some(crc), None, None, None, None])
            .unwrap()
            .unwrap();
        assert_eq!(r.algorithm, ChecksumAlgorithm::Crc32);
        assert_eq!(r.expected.as_deref(), Some(crc));
        assert!(request(None, [Some(crc), Some(crc), None, None, None]).is_err());
        assert!(request(None, [None, None, None, None, Some(crc)]).is_err()); // not 32 bytes
        let r = request(Some("crc64nvme"), [None; 5]).unwrap().unwrap();
        assert_eq!(
            (r.algorithm, r.expected),
            (ChecksumAlgorithm::Crc64Nvme, None)
        );
        assert!(request(Some("MD5"), [None; 5]).is_err());
        assert_eq!(request(None, [None; 5]).unwrap(), None);
    }
}
