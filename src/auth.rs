//! Authentication: HS256 JWTs with `sub`, `role` (`student` | `proctor` | `admin`) and `exp`.
//!
//! Roles: a student starts exams of assessments and sees and acts on their own exams only;
//! a proctor reads everything (exams, summaries, assessments with their designs,
//! subscriptions) and changes nothing; an admin does everything.
//!
//! A token is checked once per request (or once per WebSocket, at `connection_init`); the
//! result travels with the request as an [`Auth`], and every resolver asks it for a
//! [`Caller`]. Ownership is decided by the exam flow, which knows whose exam it is.

use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::error::AppError;

/// What a caller may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Takes their own exams.
    Student,
    /// Reads every exam, assessment and result and watches them live; changes nothing.
    Proctor,
    /// Manages banks, assessments and the cache, and sees every exam.
    Admin,
}

/// The claims of our tokens.
#[derive(Debug, Serialize, Deserialize)]
pub struct Claims {
    /// The student or admin id.
    pub sub: String,
    /// Their role.
    pub role: Role,
    /// Expiry, seconds since the Unix epoch.
    pub exp: u64,
}

/// An authenticated caller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    /// When the token expires (seconds since the Unix epoch): a WebSocket authenticated
    /// with it is closed then.
    pub expires_at: u64,
    /// Who: a student's id is the owner of the exams they start.
    pub sub: String,
    /// What they may do.
    pub role: Role,
}

impl Caller {
    /// Whether the caller is an admin.
    pub fn is_admin(&self) -> bool {
        self.role == Role::Admin
    }

    /// `FORBIDDEN` unless the caller is an admin.
    pub fn require_admin(&self) -> Result<(), AppError> {
        if self.is_admin() {
            Ok(())
        } else {
            Err(AppError::Forbidden(
                "this operation needs the admin role".into(),
            ))
        }
    }

    /// Whether the caller is staff (proctor or admin): they read every exam.
    pub fn is_staff(&self) -> bool {
        matches!(self.role, Role::Admin | Role::Proctor)
    }

    /// `FORBIDDEN` unless the caller is staff (proctor or admin).
    pub fn require_staff(&self) -> Result<(), AppError> {
        if self.is_staff() {
            Ok(())
        } else {
            Err(AppError::Forbidden(
                "this operation needs the proctor or admin role".into(),
            ))
        }
    }

    /// `FORBIDDEN` unless the caller may read `student_id`'s exam: its student, or staff.
    pub fn require_reader(&self, student_id: &str) -> Result<(), AppError> {
        if self.is_staff() || self.owns(student_id) {
            Ok(())
        } else {
            Err(AppError::Forbidden(
                "this exam belongs to another student".into(),
            ))
        }
    }

    /// Whether the caller is the student `student_id` (a proctor or admin whose id happens
    /// to be the same owns nothing).
    fn owns(&self, student_id: &str) -> bool {
        self.role == Role::Student && self.sub == student_id
    }

    /// `FORBIDDEN` unless the caller may act on `student_id`'s exam: its student, or an
    /// admin (proctors change nothing).
    pub fn require_owner(&self, student_id: &str) -> Result<(), AppError> {
        if self.is_admin() || self.owns(student_id) {
            Ok(())
        } else {
            Err(AppError::Forbidden(
                "this exam belongs to another student".into(),
            ))
        }
    }
}

/// The outcome of checking a request's credentials.
#[derive(Clone, Debug)]
pub enum Auth {
    /// A valid token.
    Caller(Caller),
    /// No token at all.
    Anonymous,
    /// A token that failed verification, and why.
    Invalid(String),
}

impl Auth {
    /// Who is calling, for logs: the role's name (as in tokens), `anonymous` without a
    /// token, `invalid` with a token that failed verification.
    pub fn role_name(&self) -> &'static str {
        match self {
            Self::Caller(caller) => match caller.role {
                Role::Student => "student",
                Role::Proctor => "proctor",
                Role::Admin => "admin",
            },
            Self::Anonymous => "anonymous",
            Self::Invalid(_) => "invalid",
        }
    }

    /// The caller, or `UNAUTHENTICATED`.
    pub fn caller(&self) -> Result<&Caller, AppError> {
        match self {
            Self::Caller(caller) => Ok(caller),
            Self::Anonymous => Err(AppError::Unauthenticated(
                "missing bearer token (Authorization: Bearer <JWT>)".into(),
            )),
            Self::Invalid(why) => Err(AppError::Unauthenticated(format!("invalid token: {why}"))),
        }
    }
}

/// Signs and verifies tokens with one HS256 secret.
#[derive(Clone)]
pub struct JwtKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    /// Tokens expiring further than this in the future are refused: a leaked token must
    /// not work for months.
    max_lifetime_seconds: u64,
}

/// Default of `TOKEN_MAX_LIFETIME_SECONDS`: a day.
pub const DEFAULT_MAX_TOKEN_LIFETIME_SECONDS: u64 = 24 * 3600;

impl JwtKeys {
    /// Keys from a shared secret.
    pub fn new(secret: &[u8]) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 5;
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp", "sub"]);
        Self {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
            max_lifetime_seconds: DEFAULT_MAX_TOKEN_LIFETIME_SECONDS,
        }
    }

    /// The same keys refusing tokens that expire more than `seconds` from now.
    #[must_use]
    pub fn with_max_lifetime(mut self, seconds: u64) -> Self {
        self.max_lifetime_seconds = seconds;
        self
    }

    /// Mints a token valid for `ttl_seconds`.
    pub fn mint(&self, sub: &str, role: Role, ttl_seconds: u64) -> String {
        let claims = Claims {
            sub: sub.to_owned(),
            role,
            exp: now_seconds() + ttl_seconds,
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .unwrap_or_else(|e| unreachable!("HS256 signing cannot fail: {e}"))
    }

    /// Verifies a bare token (signature, algorithm, expiry, claims).
    pub fn verify(&self, token: &str) -> Auth {
        match jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation) {
            Ok(data) if data.claims.sub.is_empty() => Auth::Invalid("empty subject".into()),
            Ok(data)
                if data.claims.exp
                    > now_seconds().saturating_add(self.max_lifetime_seconds + 5) =>
            {
                Auth::Invalid(format!(
                    "lifetime longer than the allowed {} seconds",
                    self.max_lifetime_seconds
                ))
            }
            Ok(data) => Auth::Caller(Caller {
                sub: data.claims.sub,
                role: data.claims.role,
                expires_at: data.claims.exp,
            }),
            Err(e) => Auth::Invalid(describe(&e)),
        }
    }

    /// Verifies an `Authorization` header value (`Bearer <JWT>`); `None` is anonymous.
    pub fn verify_header(&self, header: Option<&str>) -> Auth {
        let Some(value) = header else {
            return Auth::Anonymous;
        };
        let value = value.trim();
        match value
            .strip_prefix("Bearer ")
            .or_else(|| value.strip_prefix("bearer "))
        {
            Some(token) => self.verify(token.trim()),
            None => Auth::Invalid("expected 'Bearer <JWT>'".into()),
        }
    }
}

fn describe(error: &jsonwebtoken::errors::Error) -> String {
    use jsonwebtoken::errors::ErrorKind;
    match error.kind() {
        ErrorKind::ExpiredSignature => "expired".into(),
        ErrorKind::ImmatureSignature => "not valid yet (nbf)".into(),
        ErrorKind::InvalidSignature => "bad signature".into(),
        ErrorKind::InvalidAlgorithm => "algorithm not allowed (HS256 only)".into(),
        ErrorKind::MissingRequiredClaim(claim) => format!("missing claim {claim}"),
        _ => "malformed".into(),
    }
}

/// Seconds since the Unix epoch.
pub fn now_seconds() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

/// A random 256-bit secret, hex-encoded, for `serve` without `JWT_SECRET`.
pub fn random_secret() -> String {
    // `rand::random` draws from a CSPRNG seeded by the operating system.
    let bytes: [u8; 32] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_minted_token_verifies_and_a_foreign_one_does_not() {
        let keys = JwtKeys::new(b"secret");
        let token = keys.mint("alice", Role::Student, 60);
        let Auth::Caller(caller) = keys.verify(&token) else {
            panic!("token did not verify");
        };
        assert_eq!(caller.sub, "alice");
        assert_eq!(caller.role, Role::Student);
        assert!(matches!(
            JwtKeys::new(b"other").verify(&token),
            Auth::Invalid(_)
        ));
        assert!(matches!(
            keys.verify_header(Some("Basic abc")),
            Auth::Invalid(_)
        ));
        assert!(matches!(keys.verify_header(None), Auth::Anonymous));
    }

    #[test]
    fn owners_and_admins_pass_ownership_checks() {
        let student = Caller {
            sub: "s1".into(),
            role: Role::Student,
            expires_at: u64::MAX,
        };
        assert!(student.require_owner("s1").is_ok());
        assert_eq!(student.require_owner("s2").unwrap_err().code(), "FORBIDDEN");
        assert_eq!(student.require_admin().unwrap_err().code(), "FORBIDDEN");
        let admin = Caller {
            sub: "root".into(),
            role: Role::Admin,
            expires_at: u64::MAX,
        };
        assert!(admin.require_owner("s2").is_ok());
        let proctor = Caller {
            sub: "s1".into(),
            role: Role::Proctor,
            expires_at: u64::MAX,
        };
        assert!(proctor.require_reader("s2").is_ok());
        assert_eq!(proctor.require_owner("s1").unwrap_err().code(), "FORBIDDEN");
        assert_eq!(proctor.require_admin().unwrap_err().code(), "FORBIDDEN");
        assert!(student.require_reader("s1").is_ok());
        assert_eq!(
            student.require_reader("s2").unwrap_err().code(),
            "FORBIDDEN"
        );
    }
}
