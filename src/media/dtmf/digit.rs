//! The sixteen DTMF digits and their three spellings: the keypad character, the RFC 4733
//! event code (section 3.2: 0-9, `*` = 10, `#` = 11, A-D = 12-15) and the tone pair
//! (ITU-T Q.23: one low-group "row" and one high-group "column" frequency).
//!
//! Owns: the conversions between them. Must not: know how a digit travels (RTP events,
//! SIP INFO or tones are the sibling modules).

use std::fmt;
use std::str::FromStr;

use super::DtmfError;

/// The low-group (row) frequencies in Hz, ITU-T Q.23.
pub const LOW_GROUP_HZ: [f32; 4] = [697.0, 770.0, 852.0, 941.0];
/// The high-group (column) frequencies in Hz, ITU-T Q.23.
pub const HIGH_GROUP_HZ: [f32; 4] = [1209.0, 1336.0, 1477.0, 1633.0];

/// The keypad, row by row: `KEYPAD[row][column]`.
const KEYPAD: [[Digit; 4]; 4] = [
    [Digit::D1, Digit::D2, Digit::D3, Digit::A],
    [Digit::D4, Digit::D5, Digit::D6, Digit::B],
    [Digit::D7, Digit::D8, Digit::D9, Digit::C],
    [Digit::Star, Digit::D0, Digit::Hash, Digit::D],
];

/// One DTMF digit. The discriminant is its RFC 4733 event code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum Digit {
    D0 = 0,
    D1 = 1,
    D2 = 2,
    D3 = 3,
    D4 = 4,
    D5 = 5,
    D6 = 6,
    D7 = 7,
    D8 = 8,
    D9 = 9,
    Star = 10,
    Hash = 11,
    A = 12,
    B = 13,
    C = 14,
    D = 15,
}

impl Digit {
    /// All sixteen, in event-code order.
    pub const ALL: [Digit; 16] = [
        Digit::D0,
        Digit::D1,
        Digit::D2,
        Digit::D3,
        Digit::D4,
        Digit::D5,
        Digit::D6,
        Digit::D7,
        Digit::D8,
        Digit::D9,
        Digit::Star,
        Digit::Hash,
        Digit::A,
        Digit::B,
        Digit::C,
        Digit::D,
    ];

    /// The digit of an RFC 4733 event code; `None` for the other events (flash, tones...).
    pub fn from_event(code: u8) -> Option<Digit> {
        Digit::ALL.get(usize::from(code)).copied()
    }

    /// The RFC 4733 event code.
    pub fn event(self) -> u8 {
        self as u8
    }

    /// The digit of a keypad character; `a`-`d` count as `A`-`D`.
    pub fn from_char(c: char) -> Option<Digit> {
        let code = match c {
            '0'..='9' => c as u8 - b'0',
            '*' => 10,
            '#' => 11,
            'A'..='D' => c as u8 - b'A' + 12,
            'a'..='d' => c as u8 - b'a' + 12,
            _ => return None,
        };
        Digit::from_event(code)
    }

    /// The keypad character (`A`-`D` upper case).
    pub fn to_char(self) -> char {
        const CHARS: &[u8; 16] = b"0123456789*#ABCD";
        char::from(CHARS[usize::from(self.event())])
    }

    /// The digit at a keypad position (row 0-3 = low group, column 0-3 = high group).
    pub fn from_position(row: usize, column: usize) -> Option<Digit> {
        KEYPAD.get(row)?.get(column).copied()
    }

    /// Its keypad position: (row, column).
    pub fn position(self) -> (usize, usize) {
        for (r, row) in KEYPAD.iter().enumerate() {
            for (c, d) in row.iter().enumerate() {
                if *d == self {
                    return (r, c);
                }
            }
        }
        unreachable!("every digit is on the keypad")
    }

    /// Its tone pair in Hz: (low group, high group).
    pub fn frequencies(self) -> (f32, f32) {
        let (r, c) = self.position();
        (LOW_GROUP_HZ[r], HIGH_GROUP_HZ[c])
    }
}

impl fmt::Display for Digit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.to_char())
    }
}

impl TryFrom<char> for Digit {
    type Error = DtmfError;
    fn try_from(c: char) -> Result<Digit, DtmfError> {
        Digit::from_char(c).ok_or(DtmfError::NotADigit(c))
    }
}

impl FromStr for Digit {
    type Err = DtmfError;
    /// One keypad character, surrounding whitespace allowed.
    fn from_str(s: &str) -> Result<Digit, DtmfError> {
        let t = s.trim();
        let mut chars = t.chars();
        match (chars.next(), chars.next()) {
            (Some(c), None) => Digit::try_from(c),
            _ => Err(DtmfError::BadDigitText(s.to_owned())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_codes_and_chars_round_trip() {
        for (code, d) in Digit::ALL.iter().enumerate() {
            assert_eq!(usize::from(d.event()), code);
            assert_eq!(Digit::from_event(d.event()), Some(*d));
            assert_eq!(Digit::from_char(d.to_char()), Some(*d));
            assert_eq!(d.to_char().to_string().parse::<Digit>().unwrap(), *d);
            let (r, c) = d.position();
            assert_eq!(Digit::from_position(r, c), Some(*d));
        }
        assert_eq!(
            Digit::ALL.iter().map(|d| d.to_char()).collect::<String>(),
            "0123456789*#ABCD"
        );
    }

    #[test]
    fn rfc4733_codes_and_keypad_frequencies() {
        assert_eq!(Digit::Star.event(), 10);
        assert_eq!(Digit::Hash.event(), 11);
        assert_eq!(Digit::D.event(), 15);
        assert_eq!(Digit::from_event(16), None, "16 is flash, not a digit");
        assert_eq!(Digit::D1.frequencies(), (697.0, 1209.0));
        assert_eq!(Digit::D0.frequencies(), (941.0, 1336.0));
        assert_eq!(Digit::Hash.frequencies(), (941.0, 1477.0));
        assert_eq!(Digit::A.frequencies(), (697.0, 1633.0));
    }

    #[test]
    fn lower_case_letters_and_bad_text() {
        assert_eq!(Digit::from_char('c'), Some(Digit::C));
        assert_eq!(" 7\r\n".parse::<Digit>().unwrap(), Digit::D7);
        assert!(matches!(
            Digit::try_from('E'),
            Err(DtmfError::NotADigit('E'))
        ));
        assert!(matches!(
            "12".parse::<Digit>(),
            Err(DtmfError::BadDigitText(_))
        ));
        assert!(matches!(
            "".parse::<Digit>(),
            Err(DtmfError::BadDigitText(_))
        ));
    }
}
