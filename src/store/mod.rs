//! sqlx access to SQLite (default) and PostgreSQL behind one repository API.
//! Must not leak SQL upward. (Placeholder types until the store lands.)

#[derive(Debug, Clone, PartialEq)]
pub struct Binding {
    pub aor: String,
    pub binding_key: String,
    pub contact_uri: String,
    pub q: Option<f32>,
    pub expires_at: i64,
    pub call_id: String,
    pub cseq: u32,
    pub received: String,
    pub transport: String,
    pub local_addr: String,
    pub flow: Option<String>,
    pub path: Vec<String>,
    pub user_agent: String,
    pub instance_id: Option<String>,
    pub reg_id: Option<u32>,
    pub node_id: String,
    pub updated_at: i64,
}
