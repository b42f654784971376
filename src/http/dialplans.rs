//! The dialplan folder (`[paths] dialplans`) through the API: list its files, check a
//! candidate change against the rest of the folder, and save one file (checked, written
//! atomically, then the node reloads its plan). The language itself is
//! [`crate::dialplan`]'s; this only moves text between the folder, the checker and the
//! node.
//!
//! A candidate is checked with [`Plan::from_files`] on the folder's files as they would
//! become, in memory: the same merge and cross-file checks as [`Plan::load_dir`] (which
//! is read-the-folder-then-`from_files`), without a temp copy on disk, and the errors
//! name the bare file names the panel shows.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path as FsPath, PathBuf};

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use super::auth::AdminOnly;
use super::error::{ApiError, ApiJson};
use super::AppState;
use crate::dialplan::{DialplanError, Plan};
use crate::node::NodeControl;

/// The largest dialplan file the API takes (the sample plan is a few KiB).
pub const MAX_FILE_BYTES: usize = 256 * 1024;

/// How long a save waits for the node to reload its plan.
const RELOAD_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Reading or writing the folder failed (the server's problem, not the caller's).
#[derive(Debug, thiserror::Error)]
pub enum FolderError {
    #[error("{}: {reason}: {source}", path.display())]
    Io {
        path: PathBuf,
        reason: &'static str,
        source: std::io::Error,
    },
    #[error("the dialplan task stopped: {0}")]
    Task(#[from] tokio::task::JoinError),
}

impl From<FolderError> for ApiError {
    fn from(e: FolderError) -> Self {
        tracing::error!(error = %e, "admin API: dialplan folder");
        ApiError::internal()
    }
}

fn io(path: &FsPath, reason: &'static str) -> impl FnOnce(std::io::Error) -> FolderError {
    let path = path.to_path_buf();
    move |source| FolderError::Io {
        path,
        reason,
        source,
    }
}

/// One file of the folder.
#[derive(Serialize, Deserialize, Clone, Debug)]
#[serde(deny_unknown_fields)]
pub struct DialplanFile {
    name: String,
    text: String,
}

#[derive(Serialize)]
pub struct FileList {
    files: Vec<DialplanFile>,
}

/// One mistake: where, and why. `line` is 0 when the mistake has no line (a file that
/// cannot be read).
#[derive(Serialize, Debug, PartialEq, Eq)]
pub struct Problem {
    file: String,
    line: usize,
    reason: String,
}

/// A file name the API accepts: `[A-Za-z0-9_-]+\.toml`, so it can only name a file
/// directly in the folder (no `/`, no `..`, no hidden files).
pub fn valid_name(name: &str) -> bool {
    name.strip_suffix(".toml").is_some_and(|stem| {
        !stem.is_empty()
            && stem
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    })
}

fn check_candidate(file: &DialplanFile) -> Result<(), ApiError> {
    if !valid_name(&file.name) {
        return Err(ApiError::bad_request(
            "bad_name",
            format!(
                "{:?}: a dialplan file name is letters, digits, _ and - then .toml",
                file.name
            ),
        ));
    }
    if file.text.len() > MAX_FILE_BYTES {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!(
                "{}: a dialplan file may hold {MAX_FILE_BYTES} bytes",
                file.name
            ),
        ));
    }
    Ok(())
}

/// The folder's `*.toml` files by name, as [`Plan::load_dir`] would read them. A
/// missing folder has none.
fn read_folder(dir: &FsPath) -> Result<BTreeMap<String, String>, FolderError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
        Err(e) => return Err(io(dir, "cannot read the dialplans folder")(e)),
    };
    let mut files = BTreeMap::new();
    for entry in entries {
        let path = entry
            .map_err(io(dir, "cannot read the dialplans folder"))?
            .path();
        if !(path.extension().is_some_and(|e| e == "toml") && path.is_file()) {
            continue;
        }
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            // Not UTF-8, so the API can neither show nor name it. load_dir still reads
            // it: if it breaks the plan, a save's reload says so (409 reload_failed).
            continue;
        };
        let text = std::fs::read_to_string(&path).map_err(io(&path, "cannot read"))?;
        files.insert(name.to_owned(), text);
    }
    Ok(files)
}

/// The plan `files` make, or every mistake in them.
fn check(files: &BTreeMap<String, String>) -> Result<Plan, Vec<Problem>> {
    let pairs: Vec<(String, String)> = files
        .iter()
        .map(|(name, text)| (name.clone(), text.clone()))
        .collect();
    Plan::from_files(&pairs).map_err(|e| problems(&e))
}

fn problems(e: &DialplanError) -> Vec<Problem> {
    e.errors()
        .into_iter()
        .map(|err| match err {
            DialplanError::Invalid { file, line, reason } => Problem {
                file: file.clone(),
                line: *line,
                reason: reason.clone(),
            },
            DialplanError::Io { path, .. } => Problem {
                file: path
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                line: 0,
                reason: err.to_string(),
            },
            // errors() never yields one.
            DialplanError::Multiple(_) => Problem {
                file: String::new(),
                line: 0,
                reason: err.to_string(),
            },
        })
        .collect()
}

/// Replaces `dir/name` with `text` so a reader (or a crash) sees the old file or the
/// new one, never a part: a temp file beside it, flushed to disk, renamed over it, and
/// the folder flushed so the rename lasts.
fn write_atomically(dir: &FsPath, name: &str, text: &str) -> Result<(), FolderError> {
    std::fs::create_dir_all(dir).map_err(io(dir, "cannot make the dialplans folder"))?;
    // Not *.toml: a reload in between must not read it. Saves are serialised, so
    // one fixed name per file is enough.
    let temp = dir.join(format!(".{name}.saving"));
    let target = dir.join(name);
    let written = (|| {
        let mut f = std::fs::File::create(&temp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&temp, &target)
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&temp);
        return Err(io(&target, "cannot write")(e));
    }
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(dir, "cannot flush the dialplans folder"))
}

/// `GET /api/v1/dialplans`: every `*.toml` of the folder, by name.
pub async fn list(State(state): State<AppState>, _: AdminOnly) -> Result<Json<FileList>, ApiError> {
    let dir = state.inner.dialplans.clone();
    let files = tokio::task::spawn_blocking(move || read_folder(&dir))
        .await
        .map_err(FolderError::from)??;
    Ok(Json(FileList {
        files: files
            .into_iter()
            .map(|(name, text)| DialplanFile { name, text })
            .collect(),
    }))
}

/// `{"files": [{"name", "text"}, ...]}` or one file, `{"name", "text"}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Candidates {
    files: Option<Vec<DialplanFile>>,
    name: Option<String>,
    text: Option<String>,
}

#[derive(Serialize)]
pub struct Verdict {
    ok: bool,
    /// Only when ok.
    #[serde(skip_serializing_if = "Option::is_none")]
    routes: Option<usize>,
    /// Only when not ok.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    errors: Vec<Problem>,
}

/// `POST /api/v1/dialplans/validate`: would the folder, with these files in place of
/// (or beside) its own, make a valid plan? Nothing is written.
pub async fn validate(
    State(state): State<AppState>,
    _: AdminOnly,
    ApiJson(req): ApiJson<Candidates>,
) -> Result<Json<Verdict>, ApiError> {
    let candidates = match req {
        Candidates {
            files: Some(files),
            name: None,
            text: None,
        } if !files.is_empty() => files,
        Candidates {
            files: None,
            name: Some(name),
            text: Some(text),
        } => vec![DialplanFile { name, text }],
        _ => {
            return Err(ApiError::bad_request(
                "invalid_input",
                "send {\"files\": [{\"name\", \"text\"}, ...]} or one {\"name\", \"text\"}",
            ))
        }
    };
    for file in &candidates {
        check_candidate(file)?;
    }
    let dir = state.inner.dialplans.clone();
    let verdict = tokio::task::spawn_blocking(move || {
        let mut files = read_folder(&dir)?;
        for file in candidates {
            files.insert(file.name, file.text);
        }
        Ok::<_, FolderError>(check(&files))
    })
    .await
    .map_err(FolderError::from)??;
    Ok(Json(match verdict {
        Ok(plan) => Verdict {
            ok: true,
            routes: Some(plan.route_count()),
            errors: Vec::new(),
        },
        Err(errors) => Verdict {
            ok: false,
            routes: None,
            errors,
        },
    }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewText {
    text: String,
}

#[derive(Serialize)]
pub struct Saved {
    name: String,
    /// Of the plan the node now routes new calls by.
    routes: usize,
    contexts: usize,
}

/// `PUT /api/v1/dialplans/{name}`: writes the file (new or replaced) when the folder
/// with it makes a valid plan, then has the node route new calls by that plan. An
/// invalid change is 422 `invalid_dialplan` with the mistakes in `error.errors` and
/// changes nothing.
pub async fn save(
    State(state): State<AppState>,
    AdminOnly(who): AdminOnly,
    Path(name): Path<String>,
    ApiJson(req): ApiJson<NewText>,
) -> Result<Json<Saved>, ApiError> {
    let file = DialplanFile {
        name,
        text: req.text,
    };
    check_candidate(&file)?;
    let s = &state.inner;
    let _edit = s.dialplan_edits.lock().await;
    let dir = s.dialplans.clone();
    let name = file.name.clone();
    let checked = tokio::task::spawn_blocking(move || {
        let mut files = read_folder(&dir)?;
        files.insert(file.name.clone(), file.text.clone());
        match check(&files) {
            Ok(_) => write_atomically(&dir, &file.name, &file.text).map(|()| Ok(())),
            Err(problems) => Ok(Err(problems)),
        }
    })
    .await
    .map_err(FolderError::from)??;
    if let Err(problems) = checked {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_dialplan",
            format!("{name} not saved: the dialplan would not load"),
        )
        .with_errors(serde_json::to_value(problems).unwrap_or_default()));
    }
    tracing::info!(admin = %who.name, file = %name, "dialplan file saved");
    let unavailable = || {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            format!("{name} saved, but the node is not taking orders: it routes by the old plan until reloaded"),
        )
    };
    let (done, reloaded) = oneshot::channel();
    s.control
        .send(NodeControl::ReloadPlan { done })
        .await
        .map_err(|_| unavailable())?;
    match tokio::time::timeout(RELOAD_TIMEOUT, reloaded).await {
        Ok(Ok(Ok(plan))) => {
            tracing::info!(
                routes = plan.route_count(),
                "dialplan reloaded by the admin API"
            );
            Ok(Json(Saved {
                name,
                routes: plan.route_count(),
                contexts: plan.contexts().count(),
            }))
        }
        // The folder changed beside the API (a file edited by hand) between the check
        // and the reload.
        Ok(Ok(Err(e))) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "reload_failed",
            format!("{name} saved, but the folder does not load: the node keeps its old plan"),
        )
        .with_errors(serde_json::to_value(problems(&e)).unwrap_or_default())),
        Ok(Err(_)) | Err(_) => Err(unavailable()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_plain_toml_files_in_the_folder() {
        for good in ["default.toml", "a.toml", "Sales_2-b.toml"] {
            assert!(valid_name(good), "{good}");
        }
        for bad in [
            "",
            ".toml",
            "default",
            "default.txt",
            "../x.toml",
            "a/b.toml",
            "..toml",
            ".hidden.toml",
            "a b.toml",
            "a.b.toml",
            "é.toml",
            "a.toml/",
        ] {
            assert!(!valid_name(bad), "{bad}");
        }
    }

    #[test]
    fn a_save_replaces_the_file_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let folder = dir.path().join("plans");
        write_atomically(&folder, "a.toml", "one").expect("first");
        write_atomically(&folder, "a.toml", "two").expect("second");
        assert_eq!(
            std::fs::read_to_string(folder.join("a.toml")).expect("read"),
            "two"
        );
        let names: Vec<_> = std::fs::read_dir(&folder)
            .expect("dir")
            .filter_map(|e| e.ok())
            .map(|e| e.file_name())
            .collect();
        assert_eq!(names, ["a.toml"]);
    }
}
