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

/// A call-forward target: an extension number (the same rule as numbers), never the
/// extension itself. It need not exist (yet): the dialplan ignores targets nobody has.
pub fn check_forward(number: &str, target: &str) -> Result<(), AdminError> {
    if !valid_extension_number(target) {
        return Err(AdminError::Invalid(format!(
            "invalid forward target {target:?}: an extension number, 1-32 characters of \
             A-Z a-z 0-9 . _ -"
        )));
    }
    if target == number {
        return Err(AdminError::Invalid(format!(
            "extension {number} cannot forward to itself"
        )));
    }
    Ok(())
}

/// Every forward target of `routing` passes [`check_forward`].
pub fn check_routing(number: &str, routing: &ExtensionRouting) -> Result<(), AdminError> {
    for target in [
        &routing.forward_always,
        &routing.forward_busy,
        &routing.forward_noanswer,
    ]
    .into_iter()
    .flatten()
    {
        check_forward(number, target)?;
    }
    Ok(())
}

/// Sets do-not-disturb and the forward targets after checking them.
pub async fn set_routing(
    store: &Store,
    number: &str,
    routing: &ExtensionRouting,
) -> Result<(), AdminError> {
    check_routing(number, routing)?;
    if store.set_extension_routing(number, routing).await? {
        Ok(())
    } else {
        Err(not_found(number))
    }
}

/// Changes part of an extension's routing: reads it, applies `change`, checks and writes
/// the result, which it returns. (Read, then write: two admins changing the same
/// extension at once can lose one change, as with names.)
pub async fn change_routing(
    store: &Store,
    number: &str,
    change: impl FnOnce(&mut ExtensionRouting),
) -> Result<ExtensionRouting, AdminError> {
    let mut routing = store
        .get_extension(number)
        .await?
        .ok_or_else(|| not_found(number))?
        .routing;
    change(&mut routing);
    set_routing(store, number, &routing).await?;
    Ok(routing)
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

/// A change to an extension: any of its name, SIP password, do-not-disturb and forward
/// targets. `None` leaves a field as it is; a target of `Some(None)` clears it.
#[derive(Debug, Clone, Default)]
pub struct Change {
    pub name: Option<String>,
    pub password: Option<String>,
    pub dnd: Option<bool>,
    pub forward_always: Option<Option<String>>,
    pub forward_busy: Option<Option<String>>,
    pub forward_noanswer: Option<Option<String>>,
}

impl Change {
    fn changes_routing(&self) -> bool {
        self.dnd.is_some()
            || self.forward_always.is_some()
            || self.forward_busy.is_some()
            || self.forward_noanswer.is_some()
    }

    fn is_empty(&self) -> bool {
        self.name.is_none() && self.password.is_none() && !self.changes_routing()
    }
}

/// Applies `change` to an extension and returns the extension as it now is. The whole
/// change is checked before any of it is written, so a bad forward target does not
/// leave a new password behind. (Read, then write, as [`change_routing`].)
pub async fn change(
    store: &Store,
    realm: &str,
    number: &str,
    change: Change,
) -> Result<Extension, AdminError> {
    if change.is_empty() {
        return Err(AdminError::Invalid(
            "give a new name, password, dnd or forward_always|busy|noanswer".into(),
        ));
    }
    if let Some(name) = &change.name {
        check_name(name)?;
    }
    if let Some(password) = &change.password {
        check_password(password)?;
    }
    let routing = if change.changes_routing() {
        let mut r = store
            .get_extension(number)
            .await?
            .ok_or_else(|| not_found(number))?
            .routing;
        if let Some(dnd) = change.dnd {
            r.dnd = dnd;
        }
        if let Some(f) = change.forward_always {
            r.forward_always = f;
        }
        if let Some(f) = change.forward_busy {
            r.forward_busy = f;
        }
        if let Some(f) = change.forward_noanswer {
            r.forward_noanswer = f;
        }
        check_routing(number, &r)?;
        Some(r)
    } else {
        None
    };
    if let Some(routing) = &routing {
        set_routing(store, number, routing).await?;
    }
    if let Some(password) = &change.password {
        set_password(store, realm, number, password).await?;
    }
    if let Some(name) = &change.name {
        rename(store, number, name).await?;
    }
    store
        .get_extension(number)
        .await?
        .ok_or_else(|| not_found(number))
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
        assert!(check_forward("1000", "1001").is_ok());
        assert!(matches!(
            check_forward("1000", "1000"),
            Err(AdminError::Invalid(_))
        ));
        assert!(check_forward("1000", "").is_err());
        assert!(check_forward("1000", "a b").is_err());
        assert!(check_forward("1000", &"9".repeat(33)).is_err());
        let mut r = ExtensionRouting {
            dnd: true,
            forward_always: None,
            forward_busy: Some("2000".into()),
            forward_noanswer: Some("3000".into()),
        };
        assert!(check_routing("1000", &r).is_ok());
        r.forward_noanswer = Some("1000".into());
        assert!(check_routing("1000", &r).is_err());
        r.forward_noanswer = None;
        r.forward_always = Some("sip:x@y".into());
        assert!(check_routing("1000", &r).is_err());
    }

    #[tokio::test]
    async fn a_change_is_checked_whole_before_any_of_it_is_written() {
        let store = Store::connect("sqlite::memory:", 1).await.expect("store");
        store.migrate().await.expect("migrate");
        let before = add(&store, "pbx", "1000", "Desk", "first password")
            .await
            .expect("add");
        let bad = Change {
            password: Some("second password".into()),
            forward_busy: Some(Some("1000".into())),
            ..Change::default()
        };
        assert!(matches!(
            change(&store, "pbx", "1000", bad).await,
            Err(AdminError::Invalid(_))
        ));
        let unchanged = store.get_extension("1000").await.expect("get");
        assert_eq!(
            unchanged.as_ref().map(|e| &e.ha1_md5),
            Some(&before.ha1_md5)
        );
        assert!(matches!(
            change(&store, "pbx", "1000", Change::default()).await,
            Err(AdminError::Invalid(_))
        ));
        let good = Change {
            name: Some("Front desk".into()),
            dnd: Some(true),
            forward_noanswer: Some(Some("1001".into())),
            ..Change::default()
        };
        let after = change(&store, "pbx", "1000", good).await.expect("change");
        assert_eq!(after.display_name, "Front desk");
        assert!(after.routing.dnd);
        assert_eq!(after.routing.forward_noanswer.as_deref(), Some("1001"));
        assert_eq!(
            after.ha1_md5, before.ha1_md5,
            "the password was not part of it"
        );
        assert!(matches!(
            change(
                &store,
                "pbx",
                "9999",
                Change {
                    dnd: Some(true),
                    ..Change::default()
                }
            )
            .await,
            Err(AdminError::NotFound(_))
        ));
    }
}
