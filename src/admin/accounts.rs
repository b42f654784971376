//! Admin accounts of the web panel and the admin API: argon2id password hashes, login
//! sessions (random 256-bit ids, stored as their SHA-256, with an expiry and a CSRF
//! token) and API tokens for scripts (random, stored as their SHA-256, named, revocable).

use std::sync::OnceLock;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use rand::RngCore;
use sha2::{Digest, Sha256};

use super::AdminError;
use crate::store::{AdminAccount, SessionRecord, Store, StoreError};

/// How long a login session lasts, in seconds (absolute, not sliding).
pub const SESSION_TTL_SECS: i64 = 12 * 3600;
/// The shortest admin password accepted.
pub const MIN_PASSWORD_CHARS: usize = 12;
/// API tokens start with this, so a leaked one is recognisable in logs and scanners.
pub const TOKEN_PREFIX: &str = "rft_";

/// What an account may do: `Admin` everything, `User` (later) only its own things.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Admin,
    User,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::User => "user",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "admin" => Some(Role::Admin),
            "user" => Some(Role::User),
            _ => None,
        }
    }
}

/// 1-64 characters of `A-Z a-z 0-9 . _ @ -`; used for account and token names.
pub fn check_name(what: &str, name: &str) -> Result<(), AdminError> {
    let ok = (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'@'));
    if ok {
        Ok(())
    } else {
        Err(AdminError::Invalid(format!(
            "invalid {what} {name:?}: use 1-64 characters of A-Z a-z 0-9 . _ @ -"
        )))
    }
}

pub fn check_password(password: &str) -> Result<(), AdminError> {
    if password.chars().count() < MIN_PASSWORD_CHARS {
        return Err(AdminError::Invalid(format!(
            "an admin password needs at least {MIN_PASSWORD_CHARS} characters"
        )));
    }
    Ok(())
}

/// An argon2id PHC string (the crate's defaults: 19 MiB, 2 passes, a random salt).
pub fn hash_password(password: &str) -> String {
    let salt = SaltString::generate(&mut rand::rngs::OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .unwrap_or_default()
}

/// Whether `password` matches the PHC string (constant time in the password).
pub fn verify_password(phc: &str, password: &str) -> bool {
    PasswordHash::new(phc)
        .map(|h| {
            Argon2::default()
                .verify_password(password.as_bytes(), &h)
                .is_ok()
        })
        .unwrap_or(false)
}

/// Stands in for the hash of accounts that do not exist, so a wrong name costs the same
/// argon2 work as a wrong password.
fn decoy_hash() -> &'static str {
    static DECOY: OnceLock<String> = OnceLock::new();
    DECOY.get_or_init(|| hash_password(&random_hex()))
}

/// 256 random bits from the OS RNG, as 64 hex digits.
pub fn random_hex() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    hex(&bytes)
}

/// Hex SHA-256 of a secret: how session ids and tokens are stored and looked up.
pub fn secret_hash(secret: &str) -> String {
    hex(&Sha256::digest(secret.as_bytes()))
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::with_capacity(64), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// Equality whose time does not depend on where the strings differ.
pub fn ct_eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Adds an account after checking its name and password, owning `extension` when given
/// (which must exist; see [`link_extension`]).
pub async fn add(
    store: &Store,
    name: &str,
    role: Role,
    password: &str,
    extension: Option<&str>,
) -> Result<AdminAccount, AdminError> {
    check_name("admin name", name)?;
    check_password(password)?;
    if let Some(number) = extension {
        check_extension_exists(store, number).await?;
    }
    let password = password.to_owned();
    let hash = tokio::task::spawn_blocking(move || hash_password(&password))
        .await
        .unwrap_or_default();
    let now = crate::store::now_unix();
    let account = AdminAccount {
        name: name.to_owned(),
        role: role.as_str().to_owned(),
        password_hash: hash,
        created_at: now,
        updated_at: now,
        extension: extension.map(str::to_owned),
    };
    match store.add_admin(&account).await {
        Ok(()) => Ok(account),
        Err(StoreError::Conflict(_)) => {
            Err(AdminError::Conflict(format!("admin {name} already exists")))
        }
        Err(e) => Err(e.into()),
    }
}

/// The account when `password` is its password. The argon2 work is the same whether the
/// name exists or not, and runs off the async threads.
pub async fn authenticate(
    store: &Store,
    name: &str,
    password: &str,
) -> Result<Option<AdminAccount>, AdminError> {
    let account = store.get_admin(name).await?;
    let phc = account
        .as_ref()
        .map_or_else(|| decoy_hash().to_owned(), |a| a.password_hash.clone());
    let password = password.to_owned();
    let ok = tokio::task::spawn_blocking(move || verify_password(&phc, &password))
        .await
        .unwrap_or(false);
    Ok(account.filter(|_| ok))
}

/// A session just opened: the id goes into the cookie, the CSRF token to the client.
#[derive(Clone, PartialEq, Eq)]
pub struct NewSession {
    pub id: String,
    pub csrf_token: String,
    pub expires_at: i64,
}

/// Opens a session for `admin` at `now` (Unix seconds). Expired sessions are swept here:
/// logins are rare, and the table stays as small as the live sessions.
pub async fn open_session(store: &Store, admin: &str, now: i64) -> Result<NewSession, AdminError> {
    store.delete_expired_sessions(now).await?;
    let session = NewSession {
        id: random_hex(),
        csrf_token: random_hex(),
        expires_at: now + SESSION_TTL_SECS,
    };
    store
        .insert_session(
            &secret_hash(&session.id),
            admin,
            &session.csrf_token,
            now,
            session.expires_at,
        )
        .await?;
    Ok(session)
}

/// The live session with this id (as the cookie carries it).
pub async fn session(
    store: &Store,
    id: &str,
    now: i64,
) -> Result<Option<SessionRecord>, AdminError> {
    Ok(store.get_session(&secret_hash(id), now).await?)
}

pub async fn close_session(store: &Store, id: &str) -> Result<(), AdminError> {
    store.delete_session(&secret_hash(id)).await?;
    Ok(())
}

/// Makes a token named `token_name` for `admin`; returns it (the only time it is seen).
pub async fn create_token(
    store: &Store,
    admin: &str,
    token_name: &str,
) -> Result<String, AdminError> {
    check_name("token name", token_name)?;
    if store.get_admin(admin).await?.is_none() {
        return Err(AdminError::NotFound(format!("no admin {admin}")));
    }
    let token = format!("{TOKEN_PREFIX}{}", random_hex());
    match store
        .insert_api_token(
            &secret_hash(&token),
            admin,
            token_name,
            crate::store::now_unix(),
        )
        .await
    {
        Ok(()) => Ok(token),
        Err(StoreError::Conflict(m)) => Err(AdminError::Conflict(m)),
        Err(e) => Err(e.into()),
    }
}

/// The account a token belongs to.
pub async fn token_account(
    store: &Store,
    token: &str,
    now: i64,
) -> Result<Option<AdminAccount>, AdminError> {
    if !token.starts_with(TOKEN_PREFIX) {
        return Ok(None);
    }
    Ok(store
        .use_api_token(&secret_hash(token), now)
        .await?
        .map(|(a, _)| a))
}

pub async fn revoke_token(store: &Store, admin: &str, token_name: &str) -> Result<(), AdminError> {
    if store.remove_api_token(admin, token_name).await? {
        Ok(())
    } else {
        Err(AdminError::NotFound(format!(
            "admin {admin} has no token named {token_name}"
        )))
    }
}

async fn check_extension_exists(store: &Store, number: &str) -> Result<(), AdminError> {
    if store.get_extension(number).await?.is_none() {
        return Err(AdminError::NotFound(format!("no extension {number}")));
    }
    Ok(())
}

/// Makes `name` the owner of `extension` (`None`: owns none), as a PBX ties a user to
/// their phone: a `user` account reaches that extension's voicemail, forwarding, DND and
/// SIP password, and nothing else. Several accounts may share one extension (a desk
/// phone two people answer).
pub async fn link_extension(
    store: &Store,
    name: &str,
    extension: Option<&str>,
) -> Result<(), AdminError> {
    if let Some(number) = extension {
        check_extension_exists(store, number).await?;
    }
    if store
        .set_admin_extension(name, extension, crate::store::now_unix())
        .await?
    {
        Ok(())
    } else {
        Err(AdminError::NotFound(format!("no admin {name}")))
    }
}

pub async fn remove(store: &Store, name: &str) -> Result<(), AdminError> {
    if store.remove_admin(name).await? {
        Ok(())
    } else {
        Err(AdminError::NotFound(format!("no admin {name}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_hash_with_argon2id_and_verify() {
        let h = hash_password("correct horse battery");
        assert!(h.starts_with("$argon2id$"), "{h}");
        assert!(verify_password(&h, "correct horse battery"));
        assert!(!verify_password(&h, "correct horse batterY"));
        assert!(!verify_password("not a hash", "x"));
        assert_ne!(h, hash_password("correct horse battery"), "salted");
    }

    #[test]
    fn secrets_and_names() {
        let a = random_hex();
        assert_eq!(a.len(), 64);
        assert_ne!(a, random_hex());
        assert_eq!(secret_hash(&a).len(), 64);
        assert_ne!(secret_hash(&a), a);
        assert!(ct_eq("abc", "abc") && !ct_eq("abc", "abd") && !ct_eq("abc", "ab"));
        assert!(check_name("admin name", "root@site-1").is_ok());
        assert!(check_name("admin name", "").is_err());
        assert!(check_name("admin name", "a b").is_err());
        assert!(check_password("short").is_err());
        assert_eq!(Role::parse("user"), Some(Role::User));
        assert_eq!(Role::parse("root"), None);
    }

    #[tokio::test]
    async fn accounts_sessions_and_tokens() {
        let store = Store::connect("sqlite::memory:", 1).await.expect("store");
        store.migrate().await.expect("migrate");
        add(&store, "root", Role::Admin, "a long admin password", None)
            .await
            .expect("add");
        assert!(matches!(
            add(&store, "root", Role::Admin, "a long admin password", None).await,
            Err(AdminError::Conflict(_))
        ));
        let ok = authenticate(&store, "root", "a long admin password").await;
        assert_eq!(ok.expect("auth").map(|a| a.name), Some("root".into()));
        assert!(authenticate(&store, "root", "wrong password!!")
            .await
            .expect("auth")
            .is_none());
        assert!(authenticate(&store, "nobody", "a long admin password")
            .await
            .expect("auth")
            .is_none());
        let s = open_session(&store, "root", 1000).await.expect("session");
        let rec = session(&store, &s.id, 1001).await.expect("get");
        assert_eq!(rec.map(|r| r.csrf_token), Some(s.csrf_token.clone()));
        assert!(session(&store, &s.id, s.expires_at)
            .await
            .expect("expired")
            .is_none());
        // A later login sweeps the expired session away.
        let s2 = open_session(&store, "root", s.expires_at)
            .await
            .expect("again");
        assert!(!store
            .delete_session(&secret_hash(&s.id))
            .await
            .expect("swept"));
        close_session(&store, &s2.id).await.expect("close");
        assert!(session(&store, &s2.id, s.expires_at)
            .await
            .expect("gone")
            .is_none());
        let t = create_token(&store, "root", "backup").await.expect("token");
        assert!(t.starts_with(TOKEN_PREFIX));
        assert!(matches!(
            create_token(&store, "root", "backup").await,
            Err(AdminError::Conflict(_))
        ));
        assert!(matches!(
            create_token(&store, "nobody", "x").await,
            Err(AdminError::NotFound(_))
        ));
        let acc = token_account(&store, &t, 5).await.expect("use");
        assert_eq!(acc.map(|a| a.name), Some("root".into()));
        let listed = store.list_api_tokens(Some("root")).await.expect("list");
        assert_eq!(listed[0].last_used_at, Some(5));
        revoke_token(&store, "root", "backup")
            .await
            .expect("revoke");
        assert!(token_account(&store, &t, 6).await.expect("use").is_none());
        remove(&store, "root").await.expect("remove");
        assert!(matches!(
            remove(&store, "root").await,
            Err(AdminError::NotFound(_))
        ));
    }
}
