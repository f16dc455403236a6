//! The server's private key from a PEM file, encrypted or not: what OpenSSL's
//! `PEM_read_bio_PrivateKey` (behind Python's `ssl.load_cert_chain(certfile, keyfile,
//! password)`) accepts, so that key files used with runzeo work unchanged.
//!
//! PEM blocks (RFC 7468; RFC 1421 headers for the legacy form), the first private-key block
//! of the file wins, others (certificates, `EC PARAMETERS`) are skipped:
//!
//! | label | content |
//! |---|---|
//! | `PRIVATE KEY` | PKCS#8 `PrivateKeyInfo` |
//! | `RSA PRIVATE KEY` / `EC PRIVATE KEY` | PKCS#1 / SEC1, no headers |
//! | `ENCRYPTED PRIVATE KEY` | PKCS#8 `EncryptedPrivateKeyInfo` (RFC 5958); PBES2 (RFC 8018) with PBKDF2 (HMAC-SHA1/224/256/384/512) or scrypt, and AES-128/192/256-CBC or DES-EDE3-CBC are decrypted |
//! | `RSA PRIVATE KEY` / `EC PRIVATE KEY` / `PRIVATE KEY` with `Proc-Type: 4,ENCRYPTED` and `DEK-Info: CIPHER,IVHEX` | OpenSSL's "traditional" encryption: key = `EVP_BytesToKey(MD5, salt = IV[..8], 1 round)`, CBC with PKCS#7 padding; AES-128/192/256-CBC and DES-EDE3-CBC are decrypted |
//!
//! The passphrase is the first line of a file (without its line ending), as OpenSSL's
//! `-pass file:PATH` reads it, so it appears neither in the configuration nor in the process
//! list. An unencrypted key needs no passphrase and ignores one, as OpenSSL does.
//!
//! Other encryptions (PKCS#12 PBE and PBES1, as written by OpenSSL 1.0's `pkcs8 -topk8`,
//! single DES, Camellia, ...) are refused with the `openssl` command that converts the key.

use std::path::{Path, PathBuf};

use aes::cipher::{BlockDecryptMut, KeyIvInit, block_padding::Pkcs7};
use base64ct::{Base64, Encoding};
use md5::{Digest, Md5};
use pkcs8::der::{Decode, Reader, SliceReader};
use pkcs8::pkcs5::{self, pbes2};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs1KeyDer, PrivatePkcs8KeyDer, PrivateSec1KeyDer};
use zeroize::Zeroizing;

/// How to convert a key zodbctl cannot decrypt (printed with the key's path).
const CONVERT: &str = "openssl pkcs8 -topk8 -v2 aes-256-cbc";

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("reading the private key file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "no private key in {path} (expected a PEM block `PRIVATE KEY`, `RSA PRIVATE KEY`, \
         `EC PRIVATE KEY` or `ENCRYPTED PRIVATE KEY`)"
    )]
    NoKey { path: PathBuf },
    #[error("the private key in {path} is not valid PEM: {reason}")]
    Pem { path: PathBuf, reason: String },
    #[error(
        "the private key in {path} is encrypted ({form}): set `key-password-file` in [zeo.tls] \
         to a file whose first line is the passphrase"
    )]
    NeedsPassword { path: PathBuf, form: String },
    #[error("reading the key password file {path}: {source}")]
    PasswordFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the key password file {path} is empty (its first line is the passphrase)")]
    EmptyPassword { path: PathBuf },
    #[error(
        "wrong passphrase for the private key in {path} ({form}; passphrase from {password_file}), \
         or the key file is damaged"
    )]
    WrongPassword {
        path: PathBuf,
        form: String,
        password_file: PathBuf,
    },
    #[error(
        "the private key in {path} is encrypted with {form}, which zodbctl cannot decrypt; \
         convert it to PKCS#8 with AES-256-CBC (`{CONVERT} -in {path} -out NEW.key`) and set \
         `key` to the new file"
    )]
    Unsupported { path: PathBuf, form: String },
    #[error("the private key in {path} cannot be used: {reason}")]
    Unusable { path: PathBuf, reason: String },
}

/// One PEM block: its label, RFC 1421 headers and decoded body.
struct Block {
    label: String,
    headers: Vec<(String, String)>,
    der: Zeroizing<Vec<u8>>,
}

/// The PEM blocks of `text`, in order. Text outside blocks is ignored, as OpenSSL does.
fn blocks(text: &str) -> Result<Vec<Block>, String> {
    let mut out = Vec::new();
    let mut lines = text.lines().enumerate();
    while let Some((_, line)) = lines.next() {
        let Some(label) = line
            .trim()
            .strip_prefix("-----BEGIN ")
            .and_then(|l| l.strip_suffix("-----"))
        else {
            continue;
        };
        let label = label.to_string();
        let end = format!("-----END {label}-----");
        let mut headers = Vec::new();
        let mut body = Zeroizing::new(String::new());
        let mut in_headers = true;
        let mut closed = false;
        for (n, line) in lines.by_ref() {
            let line = line.trim();
            if line == end {
                closed = true;
                break;
            }
            if in_headers {
                if let Some((k, v)) = line.split_once(':') {
                    headers.push((k.trim().to_string(), v.trim().to_string()));
                    continue;
                }
                in_headers = false;
                if line.is_empty() {
                    continue;
                }
            }
            if line.starts_with("-----") {
                return Err(format!("line {}: `{line}` inside the {label} block", n + 1));
            }
            body.push_str(line);
        }
        if !closed {
            return Err(format!("the {label} block has no `{end}` line"));
        }
        let der = Base64::decode_vec(&body)
            .map(Zeroizing::new)
            .map_err(|e| format!("the {label} block is not valid base64 ({e})"))?;
        out.push(Block {
            label,
            headers,
            der,
        });
    }
    Ok(out)
}

/// Load the private key in `path`, decrypting it with the passphrase in `password_file`.
pub fn load(path: &Path, password_file: Option<&Path>) -> Result<PrivateKeyDer<'static>, KeyError> {
    let text = std::fs::read(path).map_err(|source| KeyError::Read {
        path: path.into(),
        source,
    })?;
    let text = Zeroizing::new(text);
    let pem_err = |reason: String| KeyError::Pem {
        path: path.into(),
        reason,
    };
    let text = std::str::from_utf8(&text).map_err(|_| pem_err("the file is not text".into()))?;
    let block = blocks(text)
        .map_err(pem_err)?
        .into_iter()
        .find(|b| b.label.ends_with("PRIVATE KEY"))
        .ok_or_else(|| KeyError::NoKey { path: path.into() })?;
    let legacy = block
        .headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("Proc-Type") && v.ends_with("ENCRYPTED"));
    let key = if block.label == "ENCRYPTED PRIVATE KEY" {
        decrypt_pkcs8(path, &block.der, password_file)?
    } else if legacy {
        let der = decrypt_legacy(path, &block, password_file)?;
        typed(path, &block.label, der.to_vec())?
    } else {
        typed(path, &block.label, block.der.to_vec())?
    };
    // Checked here so that a wrong passphrase that happens to leave valid padding, or a
    // damaged key, is reported as such rather than as a certificate/key mismatch.
    if let Err(e) = rustls::crypto::ring::sign::any_supported_type(&key) {
        return Err(match (password_file, block.label.as_str(), legacy) {
            (Some(pw), "ENCRYPTED PRIVATE KEY", _) | (Some(pw), _, true) => {
                KeyError::WrongPassword {
                    path: path.into(),
                    form: describe_block(&block),
                    password_file: pw.into(),
                }
            }
            _ => KeyError::Unusable {
                path: path.into(),
                reason: e.to_string(),
            },
        });
    }
    Ok(key)
}

/// The key type a plain PEM label names.
fn typed(path: &Path, label: &str, der: Vec<u8>) -> Result<PrivateKeyDer<'static>, KeyError> {
    Ok(match label {
        "PRIVATE KEY" => PrivatePkcs8KeyDer::from(der).into(),
        "RSA PRIVATE KEY" => PrivatePkcs1KeyDer::from(der).into(),
        "EC PRIVATE KEY" => PrivateSec1KeyDer::from(der).into(),
        other => {
            return Err(KeyError::Unusable {
                path: path.into(),
                reason: format!(
                    "a `{other}` is not supported for TLS here (RSA, ECDSA and Ed25519 keys are)"
                ),
            });
        }
    })
}

/// The passphrase: the first line of `file`, without its line ending.
fn passphrase(file: &Path) -> Result<Zeroizing<Vec<u8>>, KeyError> {
    let mut bytes =
        Zeroizing::new(
            std::fs::read(file).map_err(|source| KeyError::PasswordFile {
                path: file.into(),
                source,
            })?,
        );
    let end = bytes
        .iter()
        .position(|&b| b == b'\n')
        .unwrap_or(bytes.len());
    let end = if end > 0 && bytes[end - 1] == b'\r' {
        end - 1
    } else {
        end
    };
    bytes.truncate(end);
    if bytes.is_empty() {
        return Err(KeyError::EmptyPassword { path: file.into() });
    }
    Ok(bytes)
}

fn need_password<'a>(
    path: &Path,
    password_file: Option<&'a Path>,
    form: impl FnOnce() -> String,
) -> Result<(&'a Path, Zeroizing<Vec<u8>>), KeyError> {
    let file = password_file.ok_or_else(|| KeyError::NeedsPassword {
        path: path.into(),
        form: form(),
    })?;
    Ok((file, passphrase(file)?))
}

// ---------------------------------------------------------------------------------------------
// PKCS#8 EncryptedPrivateKeyInfo
// ---------------------------------------------------------------------------------------------

fn decrypt_pkcs8(
    path: &Path,
    der: &[u8],
    password_file: Option<&Path>,
) -> Result<PrivateKeyDer<'static>, KeyError> {
    let info = match pkcs8::EncryptedPrivateKeyInfo::from_der(der) {
        Ok(info) => info,
        // The algorithm did not parse: name it by its OID, if the structure has one.
        Err(e) => {
            return Err(match algorithm_oid(der) {
                Some(oid) => KeyError::Unsupported {
                    path: path.into(),
                    form: format!("PKCS#8 {}", oid_name(&oid)),
                },
                None => KeyError::Pem {
                    path: path.into(),
                    reason: format!("the ENCRYPTED PRIVATE KEY block does not parse ({e})"),
                },
            });
        }
    };
    let form = format!("PKCS#8 {}", describe_scheme(&info.encryption_algorithm));
    let pkcs5::EncryptionScheme::Pbes2(params) = &info.encryption_algorithm else {
        return Err(KeyError::Unsupported {
            path: path.into(),
            form,
        });
    };
    let (pw_file, pw) = need_password(path, password_file, || form.clone())?;
    let wrong = || KeyError::WrongPassword {
        path: path.into(),
        form: form.clone(),
        password_file: pw_file.into(),
    };
    let plain = match params.decrypt(&*pw, info.encrypted_data) {
        Ok(p) => Zeroizing::new(p),
        // pkcs5 reports bad padding, the sign of a wrong key, as either of these.
        Err(pkcs5::Error::DecryptFailed | pkcs5::Error::EncryptFailed) => return Err(wrong()),
        Err(_) => {
            return Err(KeyError::Unsupported {
                path: path.into(),
                form,
            });
        }
    };
    // A wrong passphrase almost always fails the padding check; if not, the result is no
    // PrivateKeyInfo.
    pkcs8::PrivateKeyInfo::from_der(&plain).map_err(|_| wrong())?;
    Ok(PrivatePkcs8KeyDer::from(plain.to_vec()).into())
}

/// The OID of `EncryptedPrivateKeyInfo.encryptionAlgorithm`, read without understanding it.
fn algorithm_oid(der: &[u8]) -> Option<pkcs8::ObjectIdentifier> {
    let mut r = SliceReader::new(der).ok()?;
    r.sequence(|r| {
        let alg: pkcs8::spki::AlgorithmIdentifierRef<'_> = r.decode()?;
        let _data: pkcs8::der::asn1::OctetStringRef<'_> = r.decode()?;
        Ok(alg.oid)
    })
    .ok()
}

fn oid_name(oid: &pkcs8::ObjectIdentifier) -> String {
    let name = match oid.to_string().as_str() {
        "1.2.840.113549.1.12.1.1" => "PKCS#12 pbeWithSHAAnd128BitRC4",
        "1.2.840.113549.1.12.1.2" => "PKCS#12 pbeWithSHAAnd40BitRC4",
        "1.2.840.113549.1.12.1.3" => "PKCS#12 pbeWithSHAAnd3-KeyTripleDES-CBC",
        "1.2.840.113549.1.12.1.4" => "PKCS#12 pbeWithSHAAnd2-KeyTripleDES-CBC",
        "1.2.840.113549.1.12.1.5" => "PKCS#12 pbeWithSHAAnd128BitRC2-CBC",
        "1.2.840.113549.1.12.1.6" => "PKCS#12 pbeWithSHAAnd40BitRC2-CBC",
        "1.2.840.113549.1.5.13" => {
            "PBES2 with a key derivation or cipher other than PBKDF2/scrypt and AES-CBC/DES-EDE3-CBC"
        }
        _ => "",
    };
    if name.is_empty() {
        format!("algorithm {oid}")
    } else {
        format!("{name} ({oid})")
    }
}

fn describe_scheme(s: &pkcs5::EncryptionScheme<'_>) -> String {
    let pbes2::Parameters { kdf, encryption } = match s {
        pkcs5::EncryptionScheme::Pbes2(p) => p,
        pkcs5::EncryptionScheme::Pbes1(a) => return format!("PBES1 {:?}", a.encryption),
        _ => return "an unknown scheme".into(),
    };
    let kdf = match kdf {
        pbes2::Kdf::Pbkdf2(k) => match k.prf {
            pbes2::Pbkdf2Prf::HmacWithSha1 => "PBKDF2-HMAC-SHA1".into(),
            pbes2::Pbkdf2Prf::HmacWithSha224 => "PBKDF2-HMAC-SHA224".into(),
            pbes2::Pbkdf2Prf::HmacWithSha256 => "PBKDF2-HMAC-SHA256".into(),
            pbes2::Pbkdf2Prf::HmacWithSha384 => "PBKDF2-HMAC-SHA384".into(),
            pbes2::Pbkdf2Prf::HmacWithSha512 => "PBKDF2-HMAC-SHA512".into(),
            other => format!("PBKDF2 ({})", other.oid()),
        },
        pbes2::Kdf::Scrypt(_) => "scrypt".to_string(),
        other => format!("KDF {}", other.oid()),
    };
    let cipher = match encryption {
        pbes2::EncryptionScheme::Aes128Cbc { .. } => "AES-128-CBC".into(),
        pbes2::EncryptionScheme::Aes192Cbc { .. } => "AES-192-CBC".into(),
        pbes2::EncryptionScheme::Aes256Cbc { .. } => "AES-256-CBC".into(),
        pbes2::EncryptionScheme::DesEde3Cbc { .. } => "DES-EDE3-CBC".into(),
        other => format!("cipher {}", other.oid()),
    };
    format!("PBES2 {kdf} {cipher}")
}

fn describe_block(b: &Block) -> String {
    if b.label == "ENCRYPTED PRIVATE KEY" {
        return match pkcs8::EncryptedPrivateKeyInfo::from_der(&b.der) {
            Ok(info) => format!("PKCS#8 {}", describe_scheme(&info.encryption_algorithm)),
            Err(_) => "PKCS#8".into(),
        };
    }
    let cipher = dek_info(b).map_or("", |(c, _)| c);
    format!("traditional OpenSSL encryption {cipher}")
}

// ---------------------------------------------------------------------------------------------
// OpenSSL's traditional (Proc-Type / DEK-Info) encryption
// ---------------------------------------------------------------------------------------------

fn dek_info(b: &Block) -> Option<(&str, &str)> {
    b.headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("DEK-Info"))
        .and_then(|(_, v)| v.split_once(','))
        .map(|(c, iv)| (c.trim(), iv.trim()))
}

#[derive(Clone, Copy)]
enum LegacyCipher {
    Aes128,
    Aes192,
    Aes256,
    DesEde3,
}

impl LegacyCipher {
    fn by_name(name: &str) -> Option<LegacyCipher> {
        match name.to_ascii_uppercase().as_str() {
            "AES-128-CBC" => Some(LegacyCipher::Aes128),
            "AES-192-CBC" => Some(LegacyCipher::Aes192),
            "AES-256-CBC" => Some(LegacyCipher::Aes256),
            "DES-EDE3-CBC" => Some(LegacyCipher::DesEde3),
            _ => None,
        }
    }
    fn key_len(self) -> usize {
        match self {
            LegacyCipher::Aes128 => 16,
            LegacyCipher::Aes192 | LegacyCipher::DesEde3 => 24,
            LegacyCipher::Aes256 => 32,
        }
    }
    fn iv_len(self) -> usize {
        match self {
            LegacyCipher::DesEde3 => 8,
            _ => 16,
        }
    }
}

/// OpenSSL's `EVP_BytesToKey` with MD5 and one round: D_i = MD5(D_{i-1} || pass || salt),
/// concatenated until the key is long enough.
fn evp_bytes_to_key(pass: &[u8], salt: &[u8], len: usize) -> Zeroizing<Vec<u8>> {
    let mut out = Zeroizing::new(Vec::with_capacity(len + 16));
    let mut prev: Option<[u8; 16]> = None;
    while out.len() < len {
        let mut h = Md5::new();
        if let Some(p) = &prev {
            h.update(p);
        }
        h.update(pass);
        h.update(salt);
        let d: [u8; 16] = h.finalize().into();
        out.extend_from_slice(&d);
        prev = Some(d);
    }
    out.truncate(len);
    out
}

fn hex(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

fn decrypt_legacy(
    path: &Path,
    b: &Block,
    password_file: Option<&Path>,
) -> Result<Zeroizing<Vec<u8>>, KeyError> {
    let form = describe_block(b);
    let (name, iv_hex) = dek_info(b).ok_or_else(|| KeyError::Pem {
        path: path.into(),
        reason: "an encrypted key without a `DEK-Info: CIPHER,IV` header".into(),
    })?;
    let cipher = LegacyCipher::by_name(name).ok_or_else(|| KeyError::Unsupported {
        path: path.into(),
        form: form.clone(),
    })?;
    let iv = hex(iv_hex)
        .filter(|iv| iv.len() == cipher.iv_len())
        .ok_or_else(|| KeyError::Pem {
            path: path.into(),
            reason: format!("bad IV {iv_hex:?} in the DEK-Info header"),
        })?;
    let (pw_file, pw) = need_password(path, password_file, || form.clone())?;
    let key = evp_bytes_to_key(&pw, &iv[..8], cipher.key_len());
    let mut buf = Zeroizing::new(b.der.to_vec());
    let plain_len = match cipher {
        LegacyCipher::Aes128 => cbc_decrypt::<aes::Aes128>(&key, &iv, &mut buf),
        LegacyCipher::Aes192 => cbc_decrypt::<aes::Aes192>(&key, &iv, &mut buf),
        LegacyCipher::Aes256 => cbc_decrypt::<aes::Aes256>(&key, &iv, &mut buf),
        LegacyCipher::DesEde3 => cbc_decrypt::<des::TdesEde3>(&key, &iv, &mut buf),
    }
    .ok_or_else(|| KeyError::WrongPassword {
        path: path.into(),
        form,
        password_file: pw_file.into(),
    })?;
    buf.truncate(plain_len);
    Ok(buf)
}

/// CBC decryption with PKCS#7 padding in place; the plaintext length, or None when the
/// padding is wrong (a wrong passphrase) or the data is not whole blocks.
fn cbc_decrypt<C>(key: &[u8], iv: &[u8], buf: &mut [u8]) -> Option<usize>
where
    C: aes::cipher::BlockCipher + aes::cipher::BlockDecrypt + aes::cipher::KeyInit,
    cbc::Decryptor<C>: KeyIvInit + BlockDecryptMut,
{
    cbc::Decryptor::<C>::new_from_slices(key, iv)
        .ok()?
        .decrypt_padded_mut::<Pkcs7>(buf)
        .ok()
        .map(<[u8]>::len)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evp_bytes_to_key_matches_openssl() {
        // `openssl enc -aes-256-cbc -P -md md5 -pass pass:secret -S 0102030405060708`
        let key = evp_bytes_to_key(b"secret", &[1, 2, 3, 4, 5, 6, 7, 8], 32);
        assert_eq!(key.len(), 32);
        assert_eq!(
            key[..16],
            Md5::digest(b"secret\x01\x02\x03\x04\x05\x06\x07\x08")[..]
        );
    }

    #[test]
    fn pem_blocks_with_headers() {
        let text = "junk\n-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n\
                    -----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\n\
                    DEK-Info: AES-128-CBC,00112233445566778899AABBCCDDEEFF\n\nAQID\n\
                    -----END RSA PRIVATE KEY-----\n";
        let b = blocks(text).unwrap();
        assert_eq!(b.len(), 2);
        assert_eq!(b[1].label, "RSA PRIVATE KEY");
        assert_eq!(*b[1].der, vec![1, 2, 3]);
        assert_eq!(
            dek_info(&b[1]),
            Some(("AES-128-CBC", "00112233445566778899AABBCCDDEEFF"))
        );
        assert!(blocks("-----BEGIN X-----\nAAAA\n").is_err());
        assert!(blocks("-----BEGIN X-----\n!!!!\n-----END X-----\n").is_err());
    }

    #[test]
    fn hex_ivs() {
        assert_eq!(hex("00ff10"), Some(vec![0, 255, 16]));
        assert_eq!(hex("0"), None);
        assert_eq!(hex("zz"), None);
        assert_eq!(hex("é0"), None);
    }

    #[test]
    fn passphrase_is_the_first_line() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("pw");
        std::fs::write(&p, "s3cret pass\r\nsecond line\n").unwrap();
        assert_eq!(&**passphrase(&p).unwrap(), b"s3cret pass");
        std::fs::write(&p, "nonewline").unwrap();
        assert_eq!(&**passphrase(&p).unwrap(), b"nonewline");
        std::fs::write(&p, "\nx\n").unwrap();
        assert!(matches!(
            passphrase(&p),
            Err(KeyError::EmptyPassword { .. })
        ));
    }

    #[test]
    fn garbage_never_panics() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k.pem");
        let pw = dir.path().join("pw");
        std::fs::write(&pw, "x\n").unwrap();
        for text in [
            "",
            "-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n",
            "-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: AES-128-CBC,00\n\nAAAA\n-----END RSA PRIVATE KEY-----\n",
            "-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: AES-128-CBC,00112233445566778899AABBCCDDEEFF\n\nAAAA\n-----END RSA PRIVATE KEY-----\n",
            "-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: BF-CBC,0011223344556677\n\nAAAA\n-----END RSA PRIVATE KEY-----\n",
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        ] {
            std::fs::write(&p, text).unwrap();
            assert!(load(&p, Some(&pw)).is_err(), "{text}");
            assert!(load(&p, None).is_err(), "{text}");
        }
    }
}
