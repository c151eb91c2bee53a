//! Shared TLS plumbing: the crypto provider, and bounded reads of the PEM and secret
//! files that the web config and the target settings name.
//!
//! Every file is read with a size cap, and errors name the file but never its content.

use std::io::Read;
use std::path::Path;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// Largest PEM file accepted (a long CA bundle is about 250 KiB).
pub const MAX_PEM_BYTES: u64 = 4 << 20;

/// Largest token or password file accepted.
pub const MAX_SECRET_BYTES: u64 = 64 << 10;

/// Makes ring the process-wide rustls provider. Safe to call more than once.
pub fn install_crypto_provider() {
    // Err only means a provider is already installed, which is what we want.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Reads at most `max` bytes of `path`; a longer file is an error, not a truncation.
pub fn read_bounded(path: &Path, max: u64) -> Result<Vec<u8>, String> {
    let file = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut buf = Vec::new();
    file.take(max + 1)
        .read_to_end(&mut buf)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if buf.len() as u64 > max {
        return Err(format!(
            "{}: larger than the limit of {max} bytes",
            path.display()
        ));
    }
    Ok(buf)
}

/// Reads a secret (token or password) file: its content without surrounding whitespace,
/// which editors and `kubectl create secret --from-file` tend to add.
pub fn read_secret(path: &Path) -> Result<String, String> {
    let raw = read_bounded(path, MAX_SECRET_BYTES)?;
    let text = String::from_utf8(raw).map_err(|_| format!("{}: not UTF-8 text", path.display()))?;
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err(format!("{}: empty", path.display()));
    }
    Ok(trimmed.to_owned())
}

/// Every certificate in a PEM file (at least one).
pub fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    certs_in(path, &read_bounded(path, MAX_PEM_BYTES)?)
}

/// Every certificate in `pem`, the content of `path` (at least one).
pub fn certs_in(path: &Path, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{}: invalid PEM: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no CERTIFICATE found", path.display()));
    }
    Ok(certs)
}

/// The first private key (PKCS#8, PKCS#1 or SEC1) in a PEM file.
pub fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    key_in(path, &read_bounded(path, MAX_PEM_BYTES)?)
}

/// The first private key in `pem`, the content of `path`.
pub fn key_in(path: &Path, pem: &[u8]) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_slice(pem)
        .map_err(|e| format!("{}: no usable private key: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_reads_and_secrets() {
        let dir = std::env::temp_dir().join(format!("pprof-tls-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let token = dir.join("token");
        std::fs::write(&token, "  s3cret\n").unwrap();
        assert_eq!(read_secret(&token).unwrap(), "s3cret");
        std::fs::write(&token, "\n").unwrap();
        assert!(read_secret(&token).unwrap_err().contains("empty"));
        std::fs::write(&token, vec![b'a'; 100]).unwrap();
        assert!(read_bounded(&token, 99).unwrap_err().contains("limit"));
        assert_eq!(read_bounded(&token, 100).unwrap().len(), 100);
        std::fs::write(&token, "not pem").unwrap();
        assert!(read_certs(&token).unwrap_err().contains("no CERTIFICATE"));
        assert!(read_key(&token).is_err());
        let missing = read_secret(&dir.join("missing")).unwrap_err();
        assert!(missing.contains("missing"), "{missing}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
