//! `X-ResDiary-Signature: sha1=<hex>`: HMAC-SHA1 of the raw body, keyed with a
//! shared secret (docs/http-contract.md). Any configured secret may sign (rotation);
//! either hex case is accepted; comparison is constant-time.

use hmac::{Hmac, KeyInit, Mac};
use sha1::Sha1;

/// The header the platform signs with.
pub const SIGNATURE_HEADER: &str = "x-resdiary-signature";

/// Why a request's signature is not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("the X-ResDiary-Signature header is missing")]
    Missing,
    #[error("the X-ResDiary-Signature header is not of the form sha1=<40 hex digits>")]
    Malformed,
    #[error("the X-ResDiary-Signature does not match the body for any configured secret")]
    Mismatch,
}

/// Checks `header` against the HMAC-SHA1 of `body` under each secret.
pub fn verify(
    secrets: &[String],
    header: Option<&[u8]>,
    body: &[u8],
) -> Result<(), SignatureError> {
    let header = header.ok_or(SignatureError::Missing)?;
    let hex_digest = header
        .strip_prefix(b"sha1=")
        .filter(|hex| hex.len() == 40)
        .ok_or(SignatureError::Malformed)?;
    let expected = hex::decode(hex_digest).map_err(|_| SignatureError::Malformed)?;
    let matches = |secret: &String| {
        let mut mac = Hmac::<Sha1>::new_from_slice(secret.as_bytes())
            .expect("HMAC accepts keys of any length");
        mac.update(body);
        mac.verify_slice(&expected).is_ok()
    };
    // Check every secret, so the time taken does not tell which one matched.
    let matched = secrets.iter().fold(false, |found, s| matches(s) | found);
    if matched {
        Ok(())
    } else {
        Err(SignatureError::Mismatch)
    }
}

/// The header value for `body` signed with `secret`, as the platform sends it.
pub fn sign(secret: &str, body: &[u8]) -> String {
    let mut mac =
        Hmac::<Sha1>::new_from_slice(secret.as_bytes()).expect("HMAC accepts keys of any length");
    mac.update(body);
    format!("sha1={}", hex::encode(mac.finalize().into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secrets(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn matches_a_known_vector() {
        // HMAC-SHA1("key", "The quick brown fox jumps over the lazy dog"): the widely
        // published example value.
        let body = b"The quick brown fox jumps over the lazy dog";
        assert_eq!(
            sign("key", body),
            "sha1=de7c9b85b8b78aa6bc8a7a36f70a90701c9db4d9"
        );
        let header = b"sha1=de7c9b85b8b78aa6bc8a7a36f70a90701c9db4d9";
        assert_eq!(verify(&secrets(&["key"]), Some(header), body), Ok(()));
    }

    #[test]
    fn accepts_any_secret_and_either_case() {
        let body = b"{}";
        let header = sign("second", body)
            .to_uppercase()
            .replace("SHA1=", "sha1=");
        assert_eq!(
            verify(
                &secrets(&["first", "second"]),
                Some(header.as_bytes()),
                body
            ),
            Ok(())
        );
    }

    #[test]
    fn refuses_changed_bodies_and_bad_headers() {
        let header = sign("key", b"{\"a\":1}");
        let keys = secrets(&["key"]);
        assert_eq!(
            verify(&keys, Some(header.as_bytes()), b"{\"a\":2}"),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(verify(&keys, None, b"{}"), Err(SignatureError::Missing));
        for bad in [
            "",
            "sha1=",
            "sha256=00",
            "de7c9b85b8b78aa6bc8a7a36f70a90701c9db4d9",
            "sha1=zz7c9b85b8b78aa6bc8a7a36f70a90701c9db4d9",
        ] {
            assert_eq!(
                verify(&keys, Some(bad.as_bytes()), b"{}"),
                Err(SignatureError::Malformed),
                "{bad}"
            );
        }
    }
}
