//! Extensions (SIP accounts) as the CLI and the admin API change them: one set of rules
//! for numbers, names and passwords, and the digest HA1s stored instead of passwords.

use super::AdminError;
use crate::sip::digest::Algorithm;
use crate::store::{valid_extension_number, Extension, ExtensionRouting, Store, StoreError};

/// The shortest SIP password accepted.
pub const MIN_PASSWORD_CHARS: usize = 8;
/// The longest display name accepted.
pub const MAX_NAME_CHARS: usize = 128;

pub fn check_number(number: &str) -> Result<(), AdminError> {
    if valid_extension_number(number) {
        Ok(())
    } else {
        Err(AdminError::Invalid(format!(
            "invalid extension number {number:?}: use 1-32 characters of A-Z a-z 0-9 . _ -"
        )))
    }
}

pub fn check_password(password: &str) -> Result<(), AdminError> {
    if password.chars().count() < MIN_PASSWORD_CHARS {
        return Err(AdminError::Invalid(format!(
            "a SIP password needs at least {MIN_PASSWORD_CHARS} characters"
        )));
    }
    Ok(())
}

/// A display name goes into SIP From headers: no control characters, at most 128.
pub fn check_name(name: &str) -> Result<(), AdminError> {
    if name.chars().count() > MAX_NAME_CHARS || name.chars().any(char::is_control) {
        return Err(AdminError::Invalid(format!(
            "invalid name {name:?}: at most {MAX_NAME_CHARS} characters, no control characters"
        )));
    }
    Ok(())
}

/// The MD5 and SHA-256 HA1 of a password: all the store keeps of it.
pub fn hashes(number: &str, realm: &str, password: &str) -> (String, String) {
    (
        Algorithm::Md5.ha1(number, realm, password),
        Algorithm::Sha256.ha1(number, realm, password),
    )
}

/// Adds an extension after checking number, name and password.
pub async fn add(
    store: &Store,
    realm: &str,
    number: &str,
    name: &str,
    password: &str,
) -> Result<Extension, AdminError> {
    check_number(number)?;
    check_name(name)?;
    check_password(password)?;
    let (ha1_md5, ha1_sha256) = hashes(number, realm, password);
    let now = crate::store::now_unix();
    let ext = Extension {
        number: number.to_owned(),
        display_name: name.to_owned(),
        realm: realm.to_owned(),
        ha1_md5,
        ha1_sha256,
        created_at: now,
        updated_at: now,
        routing: ExtensionRouting::default(),
    };
    match store.add_extension(&ext).await {
        Ok(()) => Ok(ext),
        Err(StoreError::Conflict(_)) => Err(AdminError::Conflict(format!(
            "extension {number} already exists"
        ))),
        Err(e) => Err(e.into()),
    }
}

/// Sets a new password (HA1s for `realm`).
pub async fn set_password(
    store: &Store,
    realm: &str,
    number: &str,
    password: &str,
) -> Result<(), AdminError> {
    check_password(password)?;
    let (md5, sha) = hashes(number, realm, password);
    if store
        .update_extension_secret(number, realm, &md5, &sha)
        .await?
    {
        Ok(())
    } else {
        Err(not_found(number))
    }
}

/// Sets the display name.
pub async fn rename(store: &Store, number: &str, name: &str) -> Result<(), AdminError> {
    check_name(name)?;
    if store.set_extension_name(number, name).await? {
        Ok(())
    } else {
        Err(not_found(number))
    }
}

/// Removes an extension and its registrations.
pub async fn remove(store: &Store, number: &str) -> Result<(), AdminError> {
    if store.remove_extension(number).await? {
        Ok(())
    } else {
        Err(not_found(number))
    }
}

fn not_found(number: &str) -> AdminError {
    AdminError::NotFound(format!("no extension {number}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules() {
        assert!(check_number("1000").is_ok());
        assert!(matches!(check_number("a b"), Err(AdminError::Invalid(_))));
        assert!(check_password("12345678").is_ok());
        assert!(check_password("1234567").is_err());
        assert!(check_name("Front desk").is_ok());
        assert!(check_name("a\r\nVia: x").is_err());
        assert!(check_name(&"x".repeat(129)).is_err());
    }
}
