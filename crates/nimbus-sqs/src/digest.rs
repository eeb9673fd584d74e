//! The MD5 digests SQS returns and SDKs verify: of the body, and of the message (or
//! system) attributes in SQS's binary encoding.

use crate::attributes::{AttrValue, MessageAttribute};
use md5::{Digest, Md5};
use std::collections::BTreeMap;

/// Hex MD5 of a message body's UTF-8 bytes (`MD5OfMessageBody`, `MD5OfBody`).
pub fn md5_of_body(body: &str) -> String {
    hex(&Md5::digest(body.as_bytes()))
}

/// Hex MD5 of message attributes (`MD5OfMessageAttributes`): names ascending; for each,
/// `u32be len ‖ name`, `u32be len ‖ DataType`, a transport byte (1 string, 2 binary) and
/// `u32be len ‖ value`. `None` when there are none.
pub fn md5_of_attributes(attrs: &BTreeMap<String, MessageAttribute>) -> Option<String> {
    if attrs.is_empty() {
        return None;
    }
    let mut h = Md5::new();
    fn put(h: &mut Md5, bytes: &[u8]) {
        h.update((bytes.len() as u32).to_be_bytes());
        h.update(bytes);
    }
    for (name, a) in attrs {
        put(&mut h, name.as_bytes());
        put(&mut h, a.data_type.as_bytes());
        match &a.value {
            AttrValue::String(s) => {
                h.update([1u8]);
                put(&mut h, s.as_bytes());
            }
            AttrValue::Binary(b) => {
                h.update([2u8]);
                put(&mut h, b);
            }
        }
    }
    Some(hex(&h.finalize()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(name: &str, data_type: &str, value: AttrValue) -> BTreeMap<String, MessageAttribute> {
        BTreeMap::from([(
            name.to_string(),
            MessageAttribute {
                data_type: data_type.into(),
                value,
            },
        )])
    }

    #[test]
    fn the_reference_vectors() {
        assert_eq!(md5_of_body("abc"), "900150983cd24fb0d6963f7d28e17f72");
        assert_eq!(
            md5_of_attributes(&one(
                "attribName1",
                "String",
                AttrValue::String("attribValue 1".into())
            ))
            .as_deref(),
            Some("19e27d4e946b072f3f58da80d94fd778")
        );
        assert_eq!(
            md5_of_attributes(&one(
                "binaryAttribute",
                "Binary",
                AttrValue::Binary(b"Hello binary world!".to_vec())
            ))
            .as_deref(),
            Some("31a92b15d92f8db860eda32aceb656c3")
        );
        assert_eq!(md5_of_attributes(&BTreeMap::new()), None);
    }
}
