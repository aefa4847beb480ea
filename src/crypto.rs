//! Secret sealing: provider credentials are sealed with XChaCha20-Poly1305 before they reach a
//! database, and opened only where a provider call needs them.
//!
//! A sealed value reads `v1:<key id>:<base64 of nonce || ciphertext>`. The key id is the first 8 bytes
//! of SHA-256 of the key, in hex, so it names the key without revealing it. The [`Keyring`] holds the
//! current key (which seals) and older keys (which only open), so a key can be replaced and old
//! values re-sealed (`poolkeeper secrets rotate`). This module never logs or prints a secret, and a
//! value that cannot be opened is an error, never a panic.

use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::Context;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use chacha20poly1305::aead::{Aead, Generate, KeyInit};
use chacha20poly1305::{Key, XChaCha20Poly1305, XNonce};
use sha2::{Digest, Sha256};

use crate::config::Config;

const VERSION: &str = "v1";
const NONCE_LEN: usize = 24;
/// Name of the key file generated in the data directory when no key is configured.
pub const GENERATED_KEY_FILE: &str = "secret.key";

/// A credential in the clear. `Debug` prints `Credential(***)`; it has no `Serialize`, so it cannot
/// end up in a response by accident.
#[derive(Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(transparent)]
pub struct Credential(String);

impl Credential {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Credential(***)")
    }
}

/// Why a sealed value could not be opened. The text never contains the value.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum OpenError {
    #[error("sealed value is malformed (expected `v1:<key id>:<base64>`)")]
    Malformed,
    #[error("sealed value names key {0}, which is not in the keyring")]
    UnknownKey(String),
    #[error("sealed value does not open with key {0}: wrong key or corrupted data")]
    Corrupted(String),
}

struct KeyEntry {
    id: String,
    cipher: XChaCha20Poly1305,
}

impl KeyEntry {
    fn new(key: &Key) -> Self {
        let digest = Sha256::digest(key.as_slice());
        let id = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
        Self {
            id,
            cipher: XChaCha20Poly1305::new(key),
        }
    }
}

/// The current key and the older keys that still open values.
pub struct Keyring {
    current: KeyEntry,
    old: Vec<KeyEntry>,
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keyring")
            .field("current", &self.current.id)
            .field("old", &self.old.iter().map(|k| &k.id).collect::<Vec<_>>())
            .finish()
    }
}

impl Keyring {
    /// A keyring from key text: base64 keys of 32 bytes separated by newlines, commas or spaces;
    /// `#` starts a comment line. The first key is current.
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let mut keys = Vec::new();
        for (i, token) in text
            .lines()
            .filter(|l| !l.trim_start().starts_with('#'))
            .flat_map(|l| l.split([',', ' ', '\t']))
            .filter(|t| !t.is_empty())
            .enumerate()
        {
            let bytes = B64
                .decode(token.trim())
                .map_err(|_| anyhow::anyhow!("key {} is not base64", i + 1))?;
            let key = Key::try_from(bytes.as_slice()).map_err(|_| {
                anyhow::anyhow!("key {} must be 32 bytes, has {}", i + 1, bytes.len())
            })?;
            keys.push(KeyEntry::new(&key));
        }
        let mut keys = keys.into_iter();
        let current = keys
            .next()
            .ok_or_else(|| anyhow::anyhow!("no key found (expected base64 of 32 bytes)"))?;
        Ok(Self {
            current,
            old: keys.collect(),
        })
    }

    /// A fresh random key as it is written to a key file.
    pub fn generate_key_text() -> String {
        B64.encode(Key::generate().as_slice())
    }

    /// The keyring of this configuration: `secret_key` (env `POOLKEEPER_SECRET_KEY`), else the file
    /// `secret_key_file`, else `<data_dir>/secret.key`, generated with mode 0600 when missing.
    pub fn from_config(config: &Config) -> anyhow::Result<Self> {
        if let Some(text) = &config.secret_key {
            return Self::parse(text.expose())
                .map_err(|e| anyhow::anyhow!("configuration: secret_key: {e}"));
        }
        if let Some(path) = &config.secret_key_file {
            return Self::read_file(path)
                .map_err(|e| anyhow::anyhow!("configuration: secret_key_file: {e:#}"));
        }
        let path = config.data_dir.join(GENERATED_KEY_FILE);
        Self::read_or_generate(&path)
    }

    fn read_file(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("in {}", path.display()))
    }

    fn read_or_generate(path: &PathBuf) -> anyhow::Result<Self> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        if let Some(dir) = path.parent() {
            crate::files::create_private_dir(dir)?;
        }
        // create_new: of two processes starting at once, one writes and both read the same key.
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
        {
            Ok(mut file) => {
                let text = format!(
                    "# poolkeeper master key (first line current, later lines older keys)\n{}\n",
                    Self::generate_key_text()
                );
                file.write_all(text.as_bytes())
                    .with_context(|| format!("writing {}", path.display()))?;
                tracing::info!(path = %path.display(), "generated a new master key");
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e).with_context(|| format!("creating {}", path.display())),
        }
        Self::read_file(path)
    }

    pub fn current_key_id(&self) -> &str {
        &self.current.id
    }

    pub fn key_ids(&self) -> Vec<&str> {
        std::iter::once(&self.current)
            .chain(&self.old)
            .map(|k| k.id.as_str())
            .collect()
    }

    /// Seals with the current key and a fresh random nonce.
    pub fn seal(&self, credential: &Credential) -> anyhow::Result<String> {
        let nonce = XNonce::generate();
        let ciphertext = self
            .current
            .cipher
            .encrypt(&nonce, credential.expose().as_bytes())
            .map_err(|_| anyhow::anyhow!("sealing failed"))?;
        let mut blob = nonce.to_vec();
        blob.extend_from_slice(&ciphertext);
        Ok(format!(
            "{VERSION}:{}:{}",
            self.current.id,
            B64.encode(blob)
        ))
    }

    /// The key id a sealed value names, if it is well formed.
    pub fn key_id_of(sealed: &str) -> Option<&str> {
        let mut parts = sealed.splitn(3, ':');
        match (parts.next(), parts.next(), parts.next()) {
            (Some(VERSION), Some(id), Some(_)) => Some(id),
            _ => None,
        }
    }

    pub fn open(&self, sealed: &str) -> Result<Credential, OpenError> {
        let mut parts = sealed.splitn(3, ':');
        let (Some(VERSION), Some(id), Some(body)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(OpenError::Malformed);
        };
        let entry = std::iter::once(&self.current)
            .chain(&self.old)
            .find(|k| k.id == id)
            .ok_or_else(|| OpenError::UnknownKey(id.to_string()))?;
        let blob = B64.decode(body).map_err(|_| OpenError::Malformed)?;
        if blob.len() < NONCE_LEN {
            return Err(OpenError::Malformed);
        }
        let (nonce, ciphertext) = blob.split_at(NONCE_LEN);
        let nonce = XNonce::try_from(nonce).map_err(|_| OpenError::Malformed)?;
        let plain = entry
            .cipher
            .decrypt(&nonce, ciphertext)
            .map_err(|_| OpenError::Corrupted(id.to_string()))?;
        String::from_utf8(plain)
            .map(Credential)
            .map_err(|_| OpenError::Corrupted(id.to_string()))
    }

    /// Whether a sealed value is already under the current key.
    pub fn is_current(&self, sealed: &str) -> bool {
        Self::key_id_of(sealed) == Some(self.current.id.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_round_trip_and_names_the_key() {
        let ring = Keyring::parse(&Keyring::generate_key_text()).unwrap();
        let sealed = ring.seal(&Credential::new("hunter2")).unwrap();
        assert!(sealed.starts_with(&format!("v1:{}:", ring.current_key_id())));
        assert!(!sealed.contains("hunter2"));
        assert_eq!(ring.open(&sealed).unwrap().expose(), "hunter2");
        // Fresh nonce each time.
        assert_ne!(sealed, ring.seal(&Credential::new("hunter2")).unwrap());
    }

    #[test]
    fn bad_values_are_errors_not_panics() {
        let ring = Keyring::parse(&Keyring::generate_key_text()).unwrap();
        let other = Keyring::parse(&Keyring::generate_key_text()).unwrap();
        let sealed = ring.seal(&Credential::new("x")).unwrap();
        let id = ring.current_key_id().to_string();
        let mut flipped = sealed.clone();
        let last = flipped.pop().unwrap();
        flipped.push(if last == 'A' { 'B' } else { 'A' });
        let cases = [
            ("", OpenError::Malformed),
            ("v1:abc", OpenError::Malformed),
            ("v2:x:y", OpenError::Malformed),
            (&format!("v1:{id}:!!!") as &str, OpenError::Malformed),
            (&format!("v1:{id}:AAAA"), OpenError::Malformed),
            (
                "v1:0000000000000000:AAAA",
                OpenError::UnknownKey("0000000000000000".into()),
            ),
            (&flipped, OpenError::Corrupted(id.clone())),
        ];
        for (value, want) in cases {
            assert_eq!(ring.open(value).unwrap_err(), want, "{value}");
        }
        assert!(matches!(other.open(&sealed), Err(OpenError::UnknownKey(_))));
    }

    #[test]
    fn old_keys_open_and_new_key_seals() {
        let old = Keyring::generate_key_text();
        let new = Keyring::generate_key_text();
        let before = Keyring::parse(&old).unwrap();
        let sealed = before.seal(&Credential::new("s3cret")).unwrap();
        let after = Keyring::parse(&format!("# comment\n{new}\n{old}\n")).unwrap();
        assert_eq!(after.key_ids().len(), 2);
        assert!(!after.is_current(&sealed));
        assert_eq!(after.open(&sealed).unwrap().expose(), "s3cret");
        assert!(after.is_current(&after.seal(&Credential::new("s3cret")).unwrap()));
        assert!(Keyring::parse("").is_err());
        assert!(Keyring::parse("AAAA").is_err());
    }

    #[test]
    fn debug_never_shows_secrets() {
        let c = Credential::new("hunter2");
        assert_eq!(format!("{c:?}"), "Credential(***)");
        let text = Keyring::generate_key_text();
        let ring = Keyring::parse(&text).unwrap();
        assert!(!format!("{ring:?}").contains(&text));
    }
}
