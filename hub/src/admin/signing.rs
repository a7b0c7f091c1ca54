//! Signed adapters: an ed25519 signature of the module's bytes, checked
//! against the public keys the hub trusts (`[signing] trusted_keys`).
//!
//! The signature travels beside the module as `MODULE.wasm.sig` (base64),
//! or in the admin API's upload. With `require_signatures = true` an
//! unsigned module is refused; a signature that does not verify is refused
//! always, required or not.

use base64::Engine as _;
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use std::path::Path;

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::STANDARD
}

/// Why a module's signature is not accepted.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum SignatureError {
    /// No signature, and one is required.
    #[error("module {module} is not signed ({module}.sig is missing) and signing.require_signatures is on; sign it with `govhub adapter sign`")]
    Unsigned {
        /// The module.
        module: String,
    },
    /// The signature is not base64 of 64 bytes.
    #[error("the signature of {module} is malformed: {reason}")]
    Malformed {
        /// The module.
        module: String,
        /// What is wrong.
        reason: String,
    },
    /// No trusted key verifies it.
    #[error("the signature of {module} does not verify with any trusted key (signed by an unknown key, or the module changed after signing)")]
    Forged {
        /// The module.
        module: String,
    },
    /// A configured key is not usable.
    #[error("signing.trusted_keys[{index}]: {reason}")]
    BadKey {
        /// Which key.
        index: usize,
        /// Why.
        reason: String,
    },
}

/// Parses the trusted public keys (base64, 32 bytes each).
pub fn parse_keys(keys: &[String]) -> Result<Vec<VerifyingKey>, SignatureError> {
    keys.iter()
        .enumerate()
        .map(|(index, k)| {
            let bytes = b64().decode(k.trim()).map_err(|e| SignatureError::BadKey {
                index,
                reason: format!("not base64: {e}"),
            })?;
            let arr: [u8; 32] = bytes.try_into().map_err(|_| SignatureError::BadKey {
                index,
                reason: "an ed25519 public key is 32 bytes".into(),
            })?;
            VerifyingKey::from_bytes(&arr).map_err(|e| SignatureError::BadKey {
                index,
                reason: e.to_string(),
            })
        })
        .collect()
}

/// Checks `signature` (base64) of `module` against `keys`. `None` for no
/// signature: refused when `required`, accepted otherwise. Returns whether
/// the module was verified.
pub fn check(
    name: &str,
    module: &[u8],
    signature: Option<&str>,
    keys: &[VerifyingKey],
    required: bool,
) -> Result<bool, SignatureError> {
    let Some(sig) = signature else {
        return if required {
            Err(SignatureError::Unsigned {
                module: name.to_string(),
            })
        } else {
            Ok(false)
        };
    };
    let bytes = b64()
        .decode(sig.trim())
        .map_err(|e| SignatureError::Malformed {
            module: name.to_string(),
            reason: format!("not base64: {e}"),
        })?;
    let arr: [u8; 64] = bytes.try_into().map_err(|_| SignatureError::Malformed {
        module: name.to_string(),
        reason: "an ed25519 signature is 64 bytes".into(),
    })?;
    let signature = Signature::from_bytes(&arr);
    if keys.iter().any(|k| k.verify(module, &signature).is_ok()) {
        Ok(true)
    } else {
        Err(SignatureError::Forged {
            module: name.to_string(),
        })
    }
}

/// Reads `MODULE.wasm.sig` beside a module, if there is one.
pub fn signature_beside(module: &Path) -> Option<String> {
    let mut sig = module.as_os_str().to_owned();
    sig.push(".sig");
    std::fs::read_to_string(sig).ok()
}

/// A new key pair: (secret, public), base64.
pub fn keygen() -> anyhow::Result<(String, String)> {
    let mut secret = [0u8; 32];
    getrandom::fill(&mut secret).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
    let key = SigningKey::from_bytes(&secret);
    Ok((
        b64().encode(key.to_bytes()),
        b64().encode(key.verifying_key().to_bytes()),
    ))
}

/// Signs `module` with a secret key (base64); returns the signature, base64.
pub fn sign(module: &[u8], secret: &str) -> anyhow::Result<String> {
    let bytes = b64()
        .decode(secret.trim())
        .map_err(|e| anyhow::anyhow!("the key is not base64: {e}"))?;
    let arr: [u8; 32] = bytes
        .try_into()
        .map_err(|_| anyhow::anyhow!("an ed25519 secret key is 32 bytes"))?;
    Ok(b64().encode(SigningKey::from_bytes(&arr).sign(module).to_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signed_unsigned_and_forged() {
        let (secret, public) = keygen().unwrap();
        let (other, _) = keygen().unwrap();
        let keys = parse_keys(&[public]).unwrap();
        let module = b"\0asm component bytes";
        let sig = sign(module, &secret).unwrap();
        assert_eq!(check("m", module, Some(&sig), &keys, true), Ok(true));
        assert!(matches!(
            check("m", module, None, &keys, true),
            Err(SignatureError::Unsigned { .. })
        ));
        assert_eq!(check("m", module, None, &keys, false), Ok(false));
        let forged = sign(module, &other).unwrap();
        assert!(matches!(
            check("m", module, Some(&forged), &keys, false),
            Err(SignatureError::Forged { .. })
        ));
        let tampered = b"\0asm component bytez";
        assert!(matches!(
            check("m", tampered, Some(&sig), &keys, true),
            Err(SignatureError::Forged { .. })
        ));
        assert!(matches!(
            check("m", module, Some("!!"), &keys, true),
            Err(SignatureError::Malformed { .. })
        ));
        assert!(matches!(
            parse_keys(&["AAAA".into()]),
            Err(SignatureError::BadKey { index: 0, .. })
        ));
    }
}
