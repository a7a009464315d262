//! Who is asking: the principal of a gateway request, from a JWT bearer
//! token that PartnerGate verifies (with `jsonwebtoken`) or from a header set
//! by a trusted authenticator in front. Owns the key material and the checks
//! (signature, algorithm, `exp`, `nbf`, `iss`, `aud`); knows nothing of routes
//! or of Cedar beyond the principal's id and the copied claims.

use std::collections::BTreeMap;
use std::path::Path;

use jsonwebtoken::{Algorithm, DecodingKey, Validation};

/// Why a request has no usable identity (the adapters answer 401).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    /// No `Authorization: Bearer …` (or no trusted header).
    #[error("no identity: {0}")]
    Missing(String),
    /// The token is there but is not accepted; the reason is for the log.
    #[error("invalid token: {0}")]
    BadToken(String),
}

/// Key material and checks for JWT bearer tokens.
pub struct JwtVerifier {
    keys: Keys,
    validation: Validation,
    claim: String,
    copy: Vec<String>,
}

impl std::fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtVerifier")
            .field("algorithms", &self.validation.algorithms)
            .field("claim", &self.claim)
            .finish_non_exhaustive()
    }
}

/// The verification keys: one (a PEM key or a secret), or a JWKS's by `kid`.
enum Keys {
    One(DecodingKey),
    ByKid(Vec<(Option<String>, DecodingKey)>),
}

/// Where the key material came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyFormat {
    /// `key_file`: a PEM public key, or the HS256 secret's bytes.
    Pem,
    /// `jwks_file`: a JSON Web Key Set (RFC 7517); a token picks its key by `kid`.
    Jwks,
}

/// What a verifier is built from (the `[identity]` table of the routes file).
#[derive(Debug, Clone)]
pub struct JwtConfig {
    /// The one accepted algorithm: `HS256`, `RS256`, `ES256` or `EdDSA`.
    pub algorithm: String,
    /// HS256: the shared secret's bytes; else the public key in PEM; or a
    /// JWKS document (see `format`).
    pub key: Vec<u8>,
    /// How `key` is written.
    pub format: KeyFormat,
    /// Accepted issuers (`iss`, then required), none = not checked.
    pub issuers: Vec<String>,
    /// Accepted audiences (`aud`, then required), none = not checked.
    pub audiences: Vec<String>,
    /// The claim naming the principal (default `sub`).
    pub claim: String,
    /// Claims copied into the decision's context (missing ones are left out).
    pub copy: Vec<String>,
    /// Clock skew allowed on `exp` and `nbf`, in seconds.
    pub leeway: u64,
}

impl JwtVerifier {
    /// A verifier for `config`; `source` names the key's file in errors.
    pub fn new(config: &JwtConfig, source: &Path) -> Result<Self, String> {
        let algorithm = match config.algorithm.as_str() {
            "HS256" => Algorithm::HS256,
            "RS256" => Algorithm::RS256,
            "ES256" => Algorithm::ES256,
            "EdDSA" => Algorithm::EdDSA,
            other => {
                return Err(format!(
                    "algorithm `{other}` is not accepted (HS256, RS256, ES256 or EdDSA)"
                ))
            }
        };
        let keys = if config.format == KeyFormat::Jwks {
            Keys::ByKid(jwks_keys(config, source)?)
        } else {
            Keys::One(pem_key(config, algorithm, source)?)
        };
        // One algorithm, fixed by the configuration, never by the token's
        // header: `alg: none` and algorithm confusion (an HS256 token signed
        // with an RSA public key) are refused by `decode`.
        let mut validation = Validation::new(algorithm);
        validation.validate_nbf = true;
        validation.leeway = config.leeway;
        // A configured check requires its claim: a token without `iss` (or
        // `aud`) is refused, never let through unchecked.
        validation.required_spec_claims = ["exp".to_string()].into_iter().collect();
        if config.issuers.is_empty() {
            validation.iss = None;
        } else {
            validation.set_issuer(&config.issuers);
            validation.required_spec_claims.insert("iss".into());
        }
        if config.audiences.is_empty() {
            validation.validate_aud = false;
        } else {
            validation.set_audience(&config.audiences);
            validation.required_spec_claims.insert("aud".into());
        }
        Ok(JwtVerifier {
            keys,
            validation,
            claim: config.claim.clone(),
            copy: config.copy.clone(),
        })
    }

    /// The key that verifies `token`: the one key, or the JWKS key named by
    /// the token's `kid` (a set with a single key serves a token without one).
    fn key_for(&self, token: &str) -> Result<&DecodingKey, IdentityError> {
        let keys = match &self.keys {
            Keys::One(k) => return Ok(k),
            Keys::ByKid(keys) => keys,
        };
        let header = jsonwebtoken::decode_header(token)
            .map_err(|e| IdentityError::BadToken(e.to_string()))?;
        match header.kid {
            Some(kid) => keys
                .iter()
                .find(|(k, _)| k.as_deref() == Some(kid.as_str()))
                .map(|(_, key)| key)
                .ok_or_else(|| IdentityError::BadToken(format!("no key `{kid}` in the key set"))),
            None if keys.len() == 1 => Ok(&keys[0].1),
            None => Err(IdentityError::BadToken(
                "the token names no key (`kid`) and the key set has several".into(),
            )),
        }
    }
}

/// The key of a PEM file (or an HS256 secret) for `algorithm`.
fn pem_key(config: &JwtConfig, algorithm: Algorithm, source: &Path) -> Result<DecodingKey, String> {
    match algorithm {
        Algorithm::HS256 if config.key.len() < 32 => {
            return Err(format!(
                "{}: an HS256 secret has at least 32 bytes, this one {}",
                source.display(),
                config.key.len()
            ))
        }
        Algorithm::HS256 => Ok(DecodingKey::from_secret(&config.key)),
        Algorithm::RS256 => DecodingKey::from_rsa_pem(&config.key),
        Algorithm::ES256 => DecodingKey::from_ec_pem(&config.key),
        _ => DecodingKey::from_ed_pem(&config.key),
    }
    .map_err(|e| format!("{}: not a {} key: {e}", source.display(), config.algorithm))
}

/// The signing keys of a JWKS document usable with `algorithm`: keys whose
/// `use` is not `sig` or whose `alg` is another algorithm are left out; none
/// left is an error.
fn jwks_keys(
    config: &JwtConfig,
    source: &Path,
) -> Result<Vec<(Option<String>, DecodingKey)>, String> {
    let set: jsonwebtoken::jwk::JwkSet = serde_json::from_slice(&config.key)
        .map_err(|e| format!("{}: not a JSON Web Key Set: {e}", source.display()))?;
    let mut keys = Vec::new();
    for (i, jwk) in set.keys.iter().enumerate() {
        let common = &jwk.common;
        if common
            .public_key_use
            .as_ref()
            .is_some_and(|u| *u != jsonwebtoken::jwk::PublicKeyUse::Signature)
        {
            continue;
        }
        if common
            .key_algorithm
            .is_some_and(|a| a.to_string() != config.algorithm)
        {
            continue;
        }
        let key = DecodingKey::from_jwk(jwk)
            .map_err(|e| format!("{}: key {i}: {e}", source.display()))?;
        keys.push((common.key_id.clone(), key));
    }
    if keys.is_empty() {
        return Err(format!(
            "{}: no signing key for {} in the key set",
            source.display(),
            config.algorithm
        ));
    }
    Ok(keys)
}

impl JwtVerifier {
    /// The principal id and the copied claims of a verified `token`.
    pub fn verify(&self, token: &str) -> Result<Identity, IdentityError> {
        let data = jsonwebtoken::decode::<serde_json::Map<String, serde_json::Value>>(
            token,
            self.key_for(token)?,
            &self.validation,
        )
        .map_err(|e| IdentityError::BadToken(e.to_string()))?;
        let claims = data.claims;
        let id = match claims.get(&self.claim) {
            Some(serde_json::Value::String(s)) if !s.is_empty() => s.clone(),
            Some(_) => {
                return Err(IdentityError::BadToken(format!(
                    "claim `{}` is not a non-empty string",
                    self.claim
                )))
            }
            None => {
                return Err(IdentityError::BadToken(format!(
                    "claim `{}` (the principal) is missing",
                    self.claim
                )))
            }
        };
        let copied = self
            .copy
            .iter()
            .filter_map(|c| claims.get(c).map(|v| (c.clone(), v.clone())))
            .collect();
        Ok(Identity {
            id,
            claims: copied,
            source: Source::Jwt,
        })
    }
}

/// Where a principal came from (recorded with the decision).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// A JWT bearer token PartnerGate verified.
    Jwt,
    /// A header set by a trusted authenticator in front.
    Header,
}

impl Source {
    /// The name in the decision log and the metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Jwt => "jwt",
            Source::Header => "header",
        }
    }
}

/// A caller's identity.
#[derive(Debug, Clone, PartialEq)]
pub struct Identity {
    /// The principal's entity id (its type comes from the routes file).
    pub id: String,
    /// Claims copied into the context.
    pub claims: BTreeMap<String, serde_json::Value>,
    /// How it was established.
    pub source: Source,
}

/// The bearer token of an `Authorization` header value, if it is one.
pub fn bearer(header: Option<&str>) -> Result<&str, IdentityError> {
    let value = header.ok_or_else(|| IdentityError::Missing("no Authorization header".into()))?;
    let (scheme, token) = value
        .split_once(' ')
        .ok_or_else(|| IdentityError::Missing("Authorization is not `Bearer <token>`".into()))?;
    if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
        return Err(IdentityError::Missing(
            "Authorization is not `Bearer <token>`".into(),
        ));
    }
    Ok(token.trim())
}
