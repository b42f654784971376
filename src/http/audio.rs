//! Serving a sound file (voicemail messages, call recordings) to a browser's `<audio>`:
//! the whole file (200) or the one byte range asked for (206, RFC 9110), so the player can
//! seek, read in chunks on the blocking pool so a large file holds no async thread.
//!
//! Owns: the Range rules and the streaming. Must not: decide who may hear which file
//! (the handlers check that first).

use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;

use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use futures_util::stream;

use super::error::ApiError;

/// Bytes read per chunk.
const CHUNK: usize = 64 * 1024;

/// A `Range` the file cannot satisfy (416).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unsatisfiable;

/// A `Range` header's one byte range over a `len`-byte body: `Ok(None)` to send it whole
/// (no header, a unit other than bytes, or several ranges: RFC 9110 lets a server ignore
/// those), `Err` when it cannot be satisfied.
pub fn byte_range(headers: &HeaderMap, len: u64) -> Result<Option<(u64, u64)>, Unsatisfiable> {
    let Some(spec) = headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().strip_prefix("bytes="))
    else {
        return Ok(None);
    };
    if spec.contains(',') {
        return Ok(None);
    }
    let (first, last) = spec.split_once('-').ok_or(Unsatisfiable)?;
    let (first, last) = (first.trim(), last.trim());
    let (start, end) = if first.is_empty() {
        // The last N bytes.
        let n: u64 = last.parse().map_err(|_| Unsatisfiable)?;
        if n == 0 || len == 0 {
            return Err(Unsatisfiable);
        }
        (len.saturating_sub(n), len - 1)
    } else {
        let start: u64 = first.parse().map_err(|_| Unsatisfiable)?;
        let end = if last.is_empty() {
            len.saturating_sub(1)
        } else {
            let end: u64 = last.parse().map_err(|_| Unsatisfiable)?;
            if end < start {
                return Err(Unsatisfiable);
            }
            end.min(len.saturating_sub(1))
        };
        (start, end)
    };
    if start >= len {
        return Err(Unsatisfiable);
    }
    Ok(Some((start, end)))
}

/// The WAV file at `path` as an `audio/wav` answer honouring `headers`' Range; `what`
/// names it in errors ("recording X"). A missing file is 404.
pub async fn wav_file(
    path: PathBuf,
    headers: &HeaderMap,
    what: &str,
) -> Result<Response, ApiError> {
    let opened = tokio::task::spawn_blocking(move || {
        let file = std::fs::File::open(&path)?;
        let len = file.metadata()?.len();
        Ok::<_, std::io::Error>((file, len))
    })
    .await
    .map_err(|_| ApiError::internal())?;
    let (mut file, len) = match opened {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(ApiError::not_found(format!(
                "{what} has no audio file any more"
            )))
        }
        Err(e) => {
            tracing::error!(what, error = %e, "audio file unreadable");
            return Err(ApiError::internal());
        }
    };
    let (status, start, end) = match byte_range(headers, len) {
        Ok(None) => (StatusCode::OK, 0, len.saturating_sub(1)),
        Ok(Some((start, end))) => (StatusCode::PARTIAL_CONTENT, start, end),
        Err(Unsatisfiable) => {
            let mut resp = ApiError::new(
                StatusCode::RANGE_NOT_SATISFIABLE,
                "range_not_satisfiable",
                format!("the audio is {len} bytes"),
            )
            .into_response();
            if let Ok(v) = HeaderValue::from_str(&format!("bytes */{len}")) {
                resp.headers_mut().insert(header::CONTENT_RANGE, v);
            }
            return Ok(resp);
        }
    };
    let count = if len == 0 { 0 } else { end - start + 1 };
    if start > 0 {
        file.seek(SeekFrom::Start(start))
            .map_err(|_| ApiError::internal())?;
    }
    let chunks = stream::unfold((Some(file), count), |(file, left)| async move {
        let file = file?;
        if left == 0 {
            return None;
        }
        let want = usize::try_from(left).unwrap_or(CHUNK).min(CHUNK);
        let read = tokio::task::spawn_blocking(move || {
            let mut f = file;
            let mut buf = vec![0u8; want];
            let n = f.read(&mut buf)?;
            buf.truncate(n);
            Ok::<_, std::io::Error>((f, buf))
        })
        .await;
        match read {
            Ok(Ok((_, buf))) if buf.is_empty() => Some((
                Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "the audio file shrank while it was sent",
                )),
                (None, 0),
            )),
            Ok(Ok((f, buf))) => {
                let left = left - buf.len() as u64;
                Some((Ok(bytes::Bytes::from(buf)), (Some(f), left)))
            }
            Ok(Err(e)) => Some((Err(e), (None, 0))),
            Err(e) => Some((Err(std::io::Error::other(e)), (None, 0))),
        }
    });
    let mut resp = Response::new(Body::from_stream(chunks));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("audio/wav"));
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    // Someone's voice: no shared cache keeps it.
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, no-store"),
    );
    if let Ok(v) = HeaderValue::from_str(&count.to_string()) {
        h.insert(header::CONTENT_LENGTH, v);
    }
    if status == StatusCode::PARTIAL_CONTENT {
        if let Ok(v) = HeaderValue::from_str(&format!("bytes {start}-{end}/{len}")) {
            h.insert(header::CONTENT_RANGE, v);
        }
    }
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(v: &str, len: u64) -> Result<Option<(u64, u64)>, Unsatisfiable> {
        let mut h = HeaderMap::new();
        h.insert(header::RANGE, HeaderValue::from_str(v).expect("header"));
        byte_range(&h, len)
    }

    #[test]
    fn ranges_are_read_as_rfc_9110_says() {
        assert_eq!(byte_range(&HeaderMap::new(), 100), Ok(None));
        assert_eq!(range("bytes=0-9", 100), Ok(Some((0, 9))));
        assert_eq!(range("bytes=90-", 100), Ok(Some((90, 99))));
        assert_eq!(range("bytes=-10", 100), Ok(Some((90, 99))));
        assert_eq!(range("bytes=50-500", 100), Ok(Some((50, 99))));
        assert_eq!(range("bytes=0-1,5-6", 100), Ok(None), "several: whole");
        assert_eq!(range("items=0-1", 100), Ok(None), "other unit: whole");
        assert_eq!(range("bytes=100-", 100), Err(Unsatisfiable));
        assert_eq!(range("bytes=9-3", 100), Err(Unsatisfiable));
        assert_eq!(range("bytes=-0", 100), Err(Unsatisfiable));
        assert_eq!(range("bytes=x-", 100), Err(Unsatisfiable));
        assert_eq!(range("bytes=5", 100), Err(Unsatisfiable));
        assert_eq!(range("bytes=-500", 100), Ok(Some((0, 99))));
    }
}
