//! Admin accounts of the web panel and API, their login sessions and API tokens, and the
//! paged and filtered reads the admin API needs. Secrets arrive hashed: the store never
//! sees a password, a session id or a token in the clear.

use sqlx::Row;

use super::{
    is_unique_violation, Cdr, Extension, ExtensionsFingerprint, Inner, Store, StoreError,
    CDR_COLUMNS, EXTENSION_COLUMNS,
};

/// An admin account. `password_hash` is an argon2id PHC string.
#[derive(Clone, PartialEq, Eq)]
pub struct AdminAccount {
    pub name: String,
    /// `admin` or `user`.
    pub role: String,
    pub password_hash: String,
    pub created_at: i64,
    pub updated_at: i64,
    /// The extension the account owns (a `user` reaches only its things), if any.
    pub extension: Option<String>,
}

impl std::fmt::Debug for AdminAccount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminAccount")
            .field("name", &self.name)
            .field("role", &self.role)
            .field("password_hash", &"<redacted>")
            .field("created_at", &self.created_at)
            .field("updated_at", &self.updated_at)
            .field("extension", &self.extension)
            .finish()
    }
}

/// A live login session, as looked up by its hashed id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRecord {
    pub admin: String,
    pub role: String,
    pub csrf_token: String,
    pub expires_at: i64,
}

/// An API token as listed (never the token itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiTokenInfo {
    pub admin: String,
    pub name: String,
    pub created_at: i64,
    pub last_used_at: Option<i64>,
}

/// Which CDRs a query returns; `None` fields do not filter. Times are Unix seconds on
/// `started_at`, `from` inclusive, `to` exclusive.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CdrFilter {
    pub caller: Option<String>,
    pub callee: Option<String>,
    pub disposition: Option<String>,
    pub from: Option<i64>,
    pub to: Option<i64>,
    /// Only calls that were recorded (and whose recording was not deleted).
    pub recorded: bool,
}

impl CdrFilter {
    /// The WHERE clause (placeholders `$1..`) and its text and integer arguments in order.
    fn clause(&self) -> (String, Vec<Arg<'_>>) {
        let mut parts = Vec::new();
        let mut args = Vec::new();
        for (col, v) in [
            ("caller", &self.caller),
            ("callee", &self.callee),
            ("disposition", &self.disposition),
        ] {
            if let Some(v) = v {
                args.push(Arg::Text(v));
                parts.push(format!("{col} = ${}", args.len()));
            }
        }
        if let Some(from) = self.from {
            args.push(Arg::Int(from));
            parts.push(format!("started_at >= ${}", args.len()));
        }
        if let Some(to) = self.to {
            args.push(Arg::Int(to));
            parts.push(format!("started_at < ${}", args.len()));
        }
        if self.recorded {
            parts.push("recording IS NOT NULL".to_owned());
        }
        let clause = if parts.is_empty() {
            String::new()
        } else {
            format!(" WHERE {}", parts.join(" AND "))
        };
        (clause, args)
    }
}

enum Arg<'a> {
    Text(&'a str),
    Int(i64),
}

macro_rules! bind_args {
    ($q:expr, $args:expr) => {{
        let mut q = $q;
        for a in $args {
            q = match a {
                Arg::Text(s) => q.bind(*s),
                Arg::Int(i) => q.bind(*i),
            };
        }
        q
    }};
}

const ADMIN_COLUMNS: &str = "name, role, password_hash, created_at, updated_at, extension";

macro_rules! admin_from_row {
    ($row:expr) => {{
        let row = $row;
        Ok::<_, sqlx::Error>(AdminAccount {
            name: row.try_get(0)?,
            role: row.try_get(1)?,
            password_hash: row.try_get(2)?,
            created_at: row.try_get(3)?,
            updated_at: row.try_get(4)?,
            extension: row.try_get(5)?,
        })
    }};
}

impl Store {
    // ---- admin accounts ----

    /// Adds an admin account; [`StoreError::Conflict`] if the name exists.
    pub async fn add_admin(&self, a: &AdminAccount) -> Result<(), StoreError> {
        let sql = format!("INSERT INTO admins ({ADMIN_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6)");
        let res = with_pool!(self, pool => sqlx::query(&sql)
            .bind(&a.name)
            .bind(&a.role)
            .bind(&a.password_hash)
            .bind(a.created_at)
            .bind(a.updated_at)
            .bind(&a.extension)
            .execute(pool)
            .await
            .map(|_| ()));
        res.map_err(|err| {
            if is_unique_violation(&err) {
                StoreError::Conflict(format!("admin {} exists", a.name))
            } else {
                err.into()
            }
        })
    }

    pub async fn get_admin(&self, name: &str) -> Result<Option<AdminAccount>, StoreError> {
        let sql = format!("SELECT {ADMIN_COLUMNS} FROM admins WHERE name = $1");
        with_pool!(self, pool => {
            let row = sqlx::query(&sql).bind(name).fetch_optional(pool).await?;
            Ok(row.map(|r| admin_from_row!(r)).transpose()?)
        })
    }

    /// Every admin account, by name.
    pub async fn list_admins(&self) -> Result<Vec<AdminAccount>, StoreError> {
        let sql = format!("SELECT {ADMIN_COLUMNS} FROM admins ORDER BY name");
        with_pool!(self, pool => {
            let rows = sqlx::query(&sql).fetch_all(pool).await?;
            Ok(rows
                .into_iter()
                .map(|r| admin_from_row!(r))
                .collect::<Result<Vec<_>, _>>()?)
        })
    }

    /// Removes an account with its sessions and tokens; `false` if there was none.
    pub async fn remove_admin(&self, name: &str) -> Result<bool, StoreError> {
        with_pool!(self, pool => {
            let res = sqlx::query("DELETE FROM admins WHERE name = $1")
                .bind(name)
                .execute(pool)
                .await?;
            Ok(res.rows_affected() > 0)
        })
    }

    /// Links an account to the extension it owns (`None`: unlinks); `false` if there is
    /// no such account. The extension must exist (a foreign key).
    pub async fn set_admin_extension(
        &self,
        name: &str,
        extension: Option<&str>,
        now: i64,
    ) -> Result<bool, StoreError> {
        with_pool!(self, pool => {
            let res = sqlx::query("UPDATE admins SET extension = $1, updated_at = $2 WHERE name = $3")
                .bind(extension)
                .bind(now)
                .bind(name)
                .execute(pool)
                .await?;
            Ok(res.rows_affected() > 0)
        })
    }

    pub async fn count_admins(&self) -> Result<i64, StoreError> {
        with_pool!(self, pool => {
            let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM admins").fetch_one(pool).await?;
            Ok(n)
        })
    }

    // ---- sessions ----

    /// Stores a session under the hash of its id.
    pub async fn insert_session(
        &self,
        id_hash: &str,
        admin: &str,
        csrf_token: &str,
        created_at: i64,
        expires_at: i64,
    ) -> Result<(), StoreError> {
        let sql =
            "INSERT INTO admin_sessions (id_hash, admin, csrf_token, created_at, expires_at) \
                   VALUES ($1, $2, $3, $4, $5)";
        with_pool!(self, pool => {
            sqlx::query(sql)
                .bind(id_hash)
                .bind(admin)
                .bind(csrf_token)
                .bind(created_at)
                .bind(expires_at)
                .execute(pool)
                .await?;
            Ok(())
        })
    }

    /// The session with this id hash if it has not expired at `now`.
    pub async fn get_session(
        &self,
        id_hash: &str,
        now: i64,
    ) -> Result<Option<SessionRecord>, StoreError> {
        let sql = "SELECT s.admin, a.role, s.csrf_token, s.expires_at FROM admin_sessions s \
                   JOIN admins a ON a.name = s.admin WHERE s.id_hash = $1 AND s.expires_at > $2";
        with_pool!(self, pool => {
            let row = sqlx::query(sql).bind(id_hash).bind(now).fetch_optional(pool).await?;
            Ok(row
                .map(|r| {
                    Ok::<_, sqlx::Error>(SessionRecord {
                        admin: r.try_get(0)?,
                        role: r.try_get(1)?,
                        csrf_token: r.try_get(2)?,
                        expires_at: r.try_get(3)?,
                    })
                })
                .transpose()?)
        })
    }

    /// Ends a session; `false` if there was none.
    pub async fn delete_session(&self, id_hash: &str) -> Result<bool, StoreError> {
        with_pool!(self, pool => {
            let res = sqlx::query("DELETE FROM admin_sessions WHERE id_hash = $1")
                .bind(id_hash)
                .execute(pool)
                .await?;
            Ok(res.rows_affected() > 0)
        })
    }

    /// Deletes sessions expired at `now`; returns how many.
    pub async fn delete_expired_sessions(&self, now: i64) -> Result<u64, StoreError> {
        with_pool!(self, pool => {
            let res = sqlx::query("DELETE FROM admin_sessions WHERE expires_at <= $1")
                .bind(now)
                .execute(pool)
                .await?;
            Ok(res.rows_affected())
        })
    }

    // ---- API tokens ----

    /// Stores a token under its hash; [`StoreError::Conflict`] if the admin already has a
    /// token of that name.
    pub async fn insert_api_token(
        &self,
        token_hash: &str,
        admin: &str,
        name: &str,
        created_at: i64,
    ) -> Result<(), StoreError> {
        let sql = "INSERT INTO api_tokens (token_hash, admin, name, created_at) \
                   VALUES ($1, $2, $3, $4)";
        let res = with_pool!(self, pool => sqlx::query(sql)
            .bind(token_hash)
            .bind(admin)
            .bind(name)
            .bind(created_at)
            .execute(pool)
            .await
            .map(|_| ()));
        res.map_err(|err| {
            if is_unique_violation(&err) {
                StoreError::Conflict(format!("admin {admin} has a token named {name}"))
            } else {
                err.into()
            }
        })
    }

    /// The account a token hash belongs to (and the token's name); notes the use at `now`.
    pub async fn use_api_token(
        &self,
        token_hash: &str,
        now: i64,
    ) -> Result<Option<(AdminAccount, String)>, StoreError> {
        let sql =
            "SELECT a.name, a.role, a.password_hash, a.created_at, a.updated_at, a.extension, \
                   t.name \
                   FROM api_tokens t JOIN admins a ON a.name = t.admin WHERE t.token_hash = $1";
        let found = with_pool!(self, pool => {
            let row = sqlx::query(sql).bind(token_hash).fetch_optional(pool).await?;
            row.map(|r| {
                let name: String = r.try_get(6)?;
                admin_from_row!(r).map(|a| (a, name))
            })
            .transpose()?
        });
        if found.is_some() {
            with_pool!(self, pool => {
                sqlx::query("UPDATE api_tokens SET last_used_at = $1 WHERE token_hash = $2")
                    .bind(now)
                    .bind(token_hash)
                    .execute(pool)
                    .await?;
            });
        }
        Ok(found)
    }

    /// An admin's tokens (all admins' when `admin` is None), by admin and name.
    pub async fn list_api_tokens(
        &self,
        admin: Option<&str>,
    ) -> Result<Vec<ApiTokenInfo>, StoreError> {
        let sql = match admin {
            Some(_) => {
                "SELECT admin, name, created_at, last_used_at FROM api_tokens \
                        WHERE admin = $1 ORDER BY admin, name"
            }
            None => {
                "SELECT admin, name, created_at, last_used_at FROM api_tokens \
                     ORDER BY admin, name"
            }
        };
        with_pool!(self, pool => {
            let mut q = sqlx::query(sql);
            if let Some(a) = admin {
                q = q.bind(a);
            }
            let rows = q.fetch_all(pool).await?;
            Ok(rows
                .into_iter()
                .map(|r| {
                    Ok::<_, sqlx::Error>(ApiTokenInfo {
                        admin: r.try_get(0)?,
                        name: r.try_get(1)?,
                        created_at: r.try_get(2)?,
                        last_used_at: r.try_get(3)?,
                    })
                })
                .collect::<Result<Vec<_>, _>>()?)
        })
    }

    /// Revokes a token; `false` if there was none.
    pub async fn remove_api_token(&self, admin: &str, name: &str) -> Result<bool, StoreError> {
        with_pool!(self, pool => {
            let res = sqlx::query("DELETE FROM api_tokens WHERE admin = $1 AND name = $2")
                .bind(admin)
                .bind(name)
                .execute(pool)
                .await?;
            Ok(res.rows_affected() > 0)
        })
    }

    // ---- paged reads for the admin API ----
    /// Sets an extension's display name; `false` if there is no such extension.
    pub async fn set_extension_name(&self, number: &str, name: &str) -> Result<bool, StoreError> {
        with_pool!(self, pool => {
            let res = sqlx::query(
                "UPDATE extensions SET display_name = $2, updated_at = $3 WHERE number = $1",
            )
            .bind(number)
            .bind(name)
            .bind(super::now_unix())
            .execute(pool)
            .await?;
            Ok(res.rows_affected() > 0)
        })
    }

    /// Extensions ordered by number, `limit` from `offset`.
    pub async fn list_extensions_page(
        &self,
        limit: u32,
        offset: u64,
    ) -> Result<Vec<Extension>, StoreError> {
        let sql = format!(
            "SELECT {EXTENSION_COLUMNS} FROM extensions ORDER BY number LIMIT $1 OFFSET $2"
        );
        with_pool!(self, pool => {
            let rows = sqlx::query(&sql)
                .bind(i64::from(limit))
                .bind(i64::try_from(offset).unwrap_or(i64::MAX))
                .fetch_all(pool)
                .await?;
            Ok(rows
                .into_iter()
                .map(|r| extension_from_row!(r))
                .collect::<Result<Vec<_>, _>>()?)
        })
    }

    /// The extensions after `after` in number order, at most `limit`: a table read page by
    /// page (keyset, so each page is an index range) never holds every row at once.
    pub async fn extensions_after(
        &self,
        after: &str,
        limit: u32,
    ) -> Result<Vec<Extension>, StoreError> {
        let sql = format!(
            "SELECT {EXTENSION_COLUMNS} FROM extensions WHERE number > $1 ORDER BY number LIMIT $2"
        );
        with_pool!(self, pool => {
            let rows = sqlx::query(&sql)
                .bind(after)
                .bind(i64::from(limit))
                .fetch_all(pool)
                .await?;
            Ok(rows
                .into_iter()
                .map(|r| extension_from_row!(r))
                .collect::<Result<Vec<_>, _>>()?)
        })
    }

    /// A fingerprint of the extensions table that changes when an extension is added,
    /// removed or changed (every change sets its `updated_at`): count, newest and sum of
    /// `updated_at`. One aggregate read, so a cache can tell cheaply whether to re-read.
    pub async fn extensions_fingerprint(&self) -> Result<ExtensionsFingerprint, StoreError> {
        let sql = "SELECT COUNT(*), CAST(COALESCE(MAX(updated_at), 0) AS BIGINT), \
                   CAST(COALESCE(SUM(updated_at), 0) AS BIGINT) FROM extensions";
        with_pool!(self, pool => {
            let fp: ExtensionsFingerprint = sqlx::query_as(sql).fetch_one(pool).await?;
            Ok(fp)
        })
    }

    pub async fn count_extensions(&self) -> Result<i64, StoreError> {
        with_pool!(self, pool => {
            let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM extensions")
                .fetch_one(pool)
                .await?;
            Ok(n)
        })
    }

    /// The CDRs `filter` selects, newest first, `limit` from `offset`.
    pub async fn query_cdrs(
        &self,
        filter: &CdrFilter,
        limit: u32,
        offset: u64,
    ) -> Result<Vec<Cdr>, StoreError> {
        let (clause, args) = filter.clause();
        let n = args.len();
        let sql = format!(
            "SELECT {CDR_COLUMNS} FROM cdrs{clause} \
             ORDER BY ended_at DESC, started_at DESC, id LIMIT ${} OFFSET ${}",
            n + 1,
            n + 2
        );
        with_pool!(self, pool => {
            let q = bind_args!(sqlx::query(&sql), &args);
            let rows = q
                .bind(i64::from(limit))
                .bind(i64::try_from(offset).unwrap_or(i64::MAX))
                .fetch_all(pool)
                .await?;
            Ok(rows
                .into_iter()
                .map(|r| cdr_from_row!(r))
                .collect::<Result<Vec<_>, _>>()?)
        })
    }

    /// How many CDRs `filter` selects.
    pub async fn count_cdrs(&self, filter: &CdrFilter) -> Result<i64, StoreError> {
        let (clause, args) = filter.clause();
        let sql = format!("SELECT COUNT(*) FROM cdrs{clause}");
        with_pool!(self, pool => {
            let q = bind_args!(sqlx::query(&sql), &args);
            let row = q.fetch_one(pool).await?;
            Ok(row.try_get::<i64, _>(0)?)
        })
    }

    pub async fn count_active_calls(&self) -> Result<i64, StoreError> {
        with_pool!(self, pool => {
            let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM active_calls")
                .fetch_one(pool)
                .await?;
            Ok(n)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cdr_filter_numbers_its_placeholders_in_order() {
        let f = CdrFilter {
            caller: Some("100".into()),
            disposition: Some("answered".into()),
            to: Some(9),
            ..Default::default()
        };
        let (clause, args) = f.clause();
        assert_eq!(
            clause,
            " WHERE caller = $1 AND disposition = $2 AND started_at < $3"
        );
        assert_eq!(args.len(), 3);
        assert_eq!(CdrFilter::default().clause().0, "");
        let recorded = CdrFilter {
            caller: Some("100".into()),
            recorded: true,
            ..Default::default()
        };
        assert_eq!(
            recorded.clause().0,
            " WHERE caller = $1 AND recording IS NOT NULL"
        );
    }

    #[test]
    fn admin_debug_hides_the_hash() {
        let a = AdminAccount {
            name: "root".into(),
            role: "admin".into(),
            password_hash: "$argon2id$secret".into(),
            created_at: 0,
            updated_at: 0,
            extension: None,
        };
        assert!(!format!("{a:?}").contains("secret"));
    }
}
