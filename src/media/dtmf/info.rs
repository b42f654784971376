//! DTMF in SIP INFO bodies: `application/dtmf-relay` (`Signal=5\r\nDuration=160\r\n`,
//! the de-facto Cisco format; Duration in milliseconds) and `application/dtmf` (the
//! digit alone).
//!
//! Owns: parsing and formatting those two bodies. Must not: parse SIP messages or
//! headers (the call layer hands over the Content-Type value and the body), or decide
//! how to answer the INFO (a [`DtmfError`] here becomes a 4xx there).
//!
//! Tolerance, because phones differ: keys are case-insensitive, whitespace around keys,
//! `=` and values is ignored, lines may end in CRLF or LF, unknown keys are skipped, a
//! missing Duration is `None`, and a signal may be the keypad character or its event
//! code 10-15 (some phones send `Signal=11` for `#`).

use std::fmt::Write as _;

use super::{Digit, DtmfError};

/// Which INFO body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InfoFormat {
    /// `application/dtmf-relay`: `Signal=` and `Duration=` lines.
    DtmfRelay,
    /// `application/dtmf`: the digit alone.
    Dtmf,
}

impl InfoFormat {
    /// The media type to put in Content-Type.
    pub fn content_type(self) -> &'static str {
        match self {
            InfoFormat::DtmfRelay => "application/dtmf-relay",
            InfoFormat::Dtmf => "application/dtmf",
        }
    }

    /// The format of a Content-Type value (parameters and case ignored); `None` for
    /// other bodies.
    pub fn from_content_type(value: &str) -> Option<InfoFormat> {
        let media_type = value.split(';').next().unwrap_or("").trim();
        if media_type.eq_ignore_ascii_case("application/dtmf-relay") {
            Some(InfoFormat::DtmfRelay)
        } else if media_type.eq_ignore_ascii_case("application/dtmf") {
            Some(InfoFormat::Dtmf)
        } else {
            None
        }
    }
}

/// A digit carried by an INFO.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InfoDigit {
    pub digit: Digit,
    /// How long the key was pressed, in milliseconds, when the body says.
    pub duration_ms: Option<u32>,
}

/// Reads an INFO body of the given format.
pub fn parse_info(format: InfoFormat, body: &[u8]) -> Result<InfoDigit, DtmfError> {
    let text = std::str::from_utf8(body).map_err(|_| DtmfError::InfoNotText)?;
    match format {
        InfoFormat::Dtmf => Ok(InfoDigit {
            digit: parse_signal(text)?,
            duration_ms: None,
        }),
        InfoFormat::DtmfRelay => parse_relay(text),
    }
}

fn parse_relay(text: &str) -> Result<InfoDigit, DtmfError> {
    let mut digit = None;
    let mut duration_ms = None;
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            return Err(DtmfError::InfoBadLine(line.to_owned()));
        };
        let key = key.trim();
        if key.eq_ignore_ascii_case("signal") {
            digit = Some(parse_signal(value)?);
        } else if key.eq_ignore_ascii_case("duration") {
            let v = value.trim();
            let ms = v
                .parse::<u32>()
                .map_err(|_| DtmfError::InfoBadDuration(v.to_owned()))?;
            duration_ms = Some(ms);
        }
    }
    let digit = digit.ok_or(DtmfError::InfoNoSignal)?;
    Ok(InfoDigit { digit, duration_ms })
}

fn parse_signal(value: &str) -> Result<Digit, DtmfError> {
    let v = value.trim();
    if v.is_empty() {
        return Err(DtmfError::InfoNoSignal);
    }
    if let Ok(d) = v.parse::<Digit>() {
        return Ok(d);
    }
    v.parse::<u8>()
        .ok()
        .and_then(Digit::from_event)
        .ok_or_else(|| DtmfError::InfoBadSignal(v.to_owned()))
}

/// Writes an INFO body of the given format (`application/dtmf` carries no duration).
pub fn format_info(format: InfoFormat, info: &InfoDigit) -> String {
    match format {
        InfoFormat::Dtmf => info.digit.to_char().to_string(),
        InfoFormat::DtmfRelay => {
            let mut s = format!("Signal={}\r\n", info.digit);
            if let Some(ms) = info.duration_ms {
                let _ = write!(s, "Duration={ms}\r\n");
            }
            s
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn relay(body: &str) -> Result<InfoDigit, DtmfError> {
        parse_info(InfoFormat::DtmfRelay, body.as_bytes())
    }

    #[test]
    fn round_trips_every_digit_in_both_formats() {
        for d in Digit::ALL {
            for duration_ms in [None, Some(0), Some(160), Some(250_000)] {
                let info = InfoDigit {
                    digit: d,
                    duration_ms,
                };
                let body = format_info(InfoFormat::DtmfRelay, &info);
                assert_eq!(relay(&body).unwrap(), info, "{body:?}");
            }
            let info = InfoDigit {
                digit: d,
                duration_ms: None,
            };
            let body = format_info(InfoFormat::Dtmf, &info);
            assert_eq!(body, d.to_char().to_string());
            assert_eq!(parse_info(InfoFormat::Dtmf, body.as_bytes()).unwrap(), info);
        }
    }

    #[test]
    fn formats_the_usual_relay_body() {
        let info = InfoDigit {
            digit: Digit::D5,
            duration_ms: Some(160),
        };
        assert_eq!(
            format_info(InfoFormat::DtmfRelay, &info),
            "Signal=5\r\nDuration=160\r\n"
        );
    }

    #[test]
    fn tolerates_case_whitespace_line_ends_and_extra_keys() {
        let want = InfoDigit {
            digit: Digit::Hash,
            duration_ms: Some(250),
        };
        assert_eq!(relay("Signal=#\r\nDuration=250\r\n").unwrap(), want);
        assert_eq!(relay("signal = #\nDURATION= 250 \n\n").unwrap(), want);
        assert_eq!(
            relay("  Signal=11\r\nVolume=10\r\nDuration=250").unwrap(),
            want
        );
        assert_eq!(
            relay("Signal= d").unwrap(),
            InfoDigit {
                digit: Digit::D,
                duration_ms: None
            }
        );
        assert_eq!(
            parse_info(InfoFormat::Dtmf, b" *\r\n").unwrap().digit,
            Digit::Star
        );
    }

    #[test]
    fn clear_errors_for_bad_bodies() {
        assert!(matches!(relay(""), Err(DtmfError::InfoNoSignal)));
        assert!(matches!(
            relay("Duration=100"),
            Err(DtmfError::InfoNoSignal)
        ));
        assert!(matches!(relay("Signal="), Err(DtmfError::InfoNoSignal)));
        assert!(matches!(relay("Signal=E"), Err(DtmfError::InfoBadSignal(s)) if s == "E"));
        assert!(matches!(
            relay("Signal=16"),
            Err(DtmfError::InfoBadSignal(_))
        ));
        assert!(matches!(
            relay("Signal=55"),
            Err(DtmfError::InfoBadSignal(_))
        ));
        assert!(matches!(
            relay("Signal=1\r\nDuration=-5"),
            Err(DtmfError::InfoBadDuration(s)) if s == "-5"
        ));
        assert!(matches!(relay("Signal 1"), Err(DtmfError::InfoBadLine(_))));
        assert!(matches!(
            parse_info(InfoFormat::Dtmf, b"99"),
            Err(DtmfError::InfoBadSignal(_))
        ));
        assert!(matches!(
            parse_info(InfoFormat::Dtmf, &[0xff, 0xfe]),
            Err(DtmfError::InfoNotText)
        ));
    }

    #[test]
    fn content_types() {
        assert_eq!(
            InfoFormat::from_content_type("Application/DTMF-Relay ; charset=x"),
            Some(InfoFormat::DtmfRelay)
        );
        assert_eq!(
            InfoFormat::from_content_type("application/dtmf"),
            Some(InfoFormat::Dtmf)
        );
        assert_eq!(InfoFormat::from_content_type("application/sdp"), None);
        for f in [InfoFormat::DtmfRelay, InfoFormat::Dtmf] {
            assert_eq!(InfoFormat::from_content_type(f.content_type()), Some(f));
        }
    }
}
