//! Access key generation: AWS-style ids (`AKIA` + 16 of `A-Z2-7`, 20 characters) and
//! 40-character secrets (base64 alphabet), from a cryptographically secure generator.

use rand::Rng;

const ID_ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
const SECRET_ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// A new key pair: `(access key id, secret access key)`.
pub fn generate() -> (String, String) {
    let mut rng = rand::rng();
    let mut pick = |alphabet: &[u8], n: usize| -> String {
        (0..n)
            .map(|_| alphabet[rng.random_range(0..alphabet.len())] as char)
            .collect()
    };
    let id = format!("AKIA{}", pick(ID_ALPHABET, 16));
    let secret = pick(SECRET_ALPHABET, 40);
    (id, secret)
}

/// Temporary credentials: `(access key id, secret access key, session token)`; the id is
/// `ASIA` + 16 of `A-Z2-7` (AWS's prefix for temporary keys), the token 192 characters of
/// the base64 alphabet (opaque, as AWS's are).
pub fn generate_session() -> (String, String, String) {
    let (id, secret) = generate();
    let mut rng = rand::rng();
    let token: String = (0..192)
        .map(|_| SECRET_ALPHABET[rng.random_range(0..SECRET_ALPHABET.len())] as char)
        .collect();
    (format!("ASIA{}", &id[4..]), secret, token)
}

/// Compares two secrets in time independent of where they differ.
pub fn secrets_equal(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// Whether `id` has the form of an id [`generate`] makes.
pub fn is_access_key_id(id: &str) -> bool {
    id.len() == 20 && id.starts_with("AKIA") && id.bytes().all(|b| ID_ALPHABET.contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_and_uniqueness() {
        let (id, secret) = generate();
        assert!(is_access_key_id(&id), "{id}");
        assert_eq!(secret.len(), 40);
        assert!(secret.bytes().all(|b| SECRET_ALPHABET.contains(&b)));
        let (id2, secret2) = generate();
        assert_ne!(id, id2);
        assert_ne!(secret, secret2);
        assert!(!is_access_key_id("AKIDEXAMPLE"));
        let (sid, ssecret, token) = generate_session();
        assert!(sid.starts_with("ASIA") && sid.len() == 20, "{sid}");
        assert_eq!(ssecret.len(), 40);
        assert_eq!(token.len(), 192);
        assert!(secrets_equal(&token, &token.clone()));
        assert!(!secrets_equal(&token, &token[1..]));
    }
}
