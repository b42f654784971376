//! sqlx access to SQLite (default) and PostgreSQL behind one repository API.
//! Must not leak SQL upward.
