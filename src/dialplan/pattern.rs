//! Number patterns: exact numbers, Asterisk-style digit classes (`_1XXX`) and regular
//! expressions. Pure; compiled once at load.

use std::fmt;

/// What a route's `match` (or `regex`, or `caller`) accepts.
#[derive(Clone)]
pub enum Pattern {
    /// Exactly this number (`1000`, `*97`).
    Exact(String),
    /// `_` followed by digit classes; `text` is the canonical spelling (classes upper case).
    Digits {
        text: String,
        elems: Vec<Elem>,
        tail: Tail,
    },
    /// A regular expression that must match the whole number; `${1}`... are its groups.
    Regex { text: String, re: regex_lite::Regex },
}

/// One position of a digit-class pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Elem {
    /// This very key.
    Key(char),
    /// Any of these inclusive ranges of keys (`X` is `0-9`).
    Set(Vec<(char, char)>),
}

/// What may follow the fixed positions of a digit-class pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tail {
    /// Nothing: the number has exactly as many keys as positions.
    None,
    /// `.`: one or more keys of any kind.
    OneOrMore,
    /// `!`: zero or more keys of any kind.
    ZeroOrMore,
}

impl fmt::Debug for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Pattern::Exact(t) => write!(f, "Exact({t:?})"),
            Pattern::Digits { text, .. } => write!(f, "Digits({text:?})"),
            Pattern::Regex { text, .. } => write!(f, "Regex({text:?})"),
        }
    }
}

impl PartialEq for Pattern {
    /// Same numbers by spelling (two regexes are equal when written alike).
    fn eq(&self, other: &Pattern) -> bool {
        match (self, other) {
            (Pattern::Exact(a), Pattern::Exact(b)) => a == b,
            (Pattern::Digits { text: a, .. }, Pattern::Digits { text: b, .. }) => a == b,
            (Pattern::Regex { text: a, .. }, Pattern::Regex { text: b, .. }) => a == b,
            _ => false,
        }
    }
}

/// Keys a number may hold: what phones send plus the characters extension names allow.
fn number_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '*' | '#' | '+' | '.' | '_' | '-')
}

impl Pattern {
    /// Reads a `match` value: `_...` is a digit-class pattern, anything else an exact
    /// number.
    pub fn parse(text: &str) -> Result<Pattern, String> {
        if text.is_empty() {
            return Err("the pattern is empty".to_owned());
        }
        let Some(rest) = text.strip_prefix('_') else {
            if let Some(bad) = text.chars().find(|&c| !number_char(c)) {
                return Err(format!(
                    "{text:?} is not a number: {bad:?} is not a key (use digits, *, #, + or \
                     letters; start with _ for a pattern like _1XXX, or use regex = \"...\")"
                ));
            }
            return Ok(Pattern::Exact(text.to_owned()));
        };
        if rest.is_empty() {
            return Err("the pattern \"_\" has nothing after the _".to_owned());
        }
        let mut elems = Vec::new();
        let mut tail = Tail::None;
        let mut canon = String::from("_");
        let mut chars = rest.chars().peekable();
        while let Some(c) = chars.next() {
            if tail != Tail::None {
                return Err(format!(
                    "pattern {text:?}: . and ! may only come last (they take all the remaining keys)"
                ));
            }
            match c {
                'X' | 'x' => {
                    elems.push(Elem::Set(vec![('0', '9')]));
                    canon.push('X');
                }
                'Z' | 'z' => {
                    elems.push(Elem::Set(vec![('1', '9')]));
                    canon.push('Z');
                }
                'N' | 'n' => {
                    elems.push(Elem::Set(vec![('2', '9')]));
                    canon.push('N');
                }
                '.' => {
                    tail = Tail::OneOrMore;
                    canon.push('.');
                }
                '!' => {
                    tail = Tail::ZeroOrMore;
                    canon.push('!');
                }
                '[' => {
                    let mut set = Vec::new();
                    let mut body = String::new();
                    let mut closed = false;
                    while let Some(k) = chars.next() {
                        if k == ']' {
                            closed = true;
                            break;
                        }
                        body.push(k);
                        if !(k.is_ascii_digit() || k == '*' || k == '#') {
                            return Err(format!(
                                "pattern {text:?}: {k:?} cannot be in [...] (digits, * and # \
                                 and ranges like 1-4 only)"
                            ));
                        }
                        if chars.peek() == Some(&'-') {
                            chars.next();
                            body.push('-');
                            let Some(hi) = chars.next().filter(char::is_ascii_digit) else {
                                return Err(format!(
                                    "pattern {text:?}: a range in [...] needs a digit on each side \
                                     of the -, like [1-4]"
                                ));
                            };
                            body.push(hi);
                            if !k.is_ascii_digit() || hi < k {
                                return Err(format!(
                                    "pattern {text:?}: the range {k}-{hi} is empty or backwards"
                                ));
                            }
                            set.push((k, hi));
                        } else {
                            set.push((k, k));
                        }
                    }
                    if !closed {
                        return Err(format!("pattern {text:?}: [ without a closing ]"));
                    }
                    if set.is_empty() {
                        return Err(format!("pattern {text:?}: [] holds no keys"));
                    }
                    canon.push('[');
                    canon.push_str(&body);
                    canon.push(']');
                    elems.push(Elem::Set(set));
                }
                ']' => return Err(format!("pattern {text:?}: ] without an opening [")),
                c if c.is_ascii_digit() || matches!(c, '*' | '#' | '+') => {
                    elems.push(Elem::Key(c));
                    canon.push(c);
                }
                c => {
                    return Err(format!(
                        "pattern {text:?}: {c:?} means nothing here (after _ use digits, * # +, \
                         X = 0-9, Z = 1-9, N = 2-9, [1-4], and . or ! last)"
                    ))
                }
            }
        }
        Ok(Pattern::Digits {
            text: canon,
            elems,
            tail,
        })
    }

    /// Reads a `regex` value; it must match the whole number.
    pub fn regex(text: &str) -> Result<Pattern, String> {
        if text.is_empty() {
            return Err("the regex is empty".to_owned());
        }
        let re = regex_lite::Regex::new(&format!("^(?:{text})$")).map_err(|e| {
            format!(
                "bad regex {text:?}: {}",
                crate::config::one_line(&e.to_string())
            )
        })?;
        Ok(Pattern::Regex {
            text: text.to_owned(),
            re,
        })
    }

    /// How the admin wrote it (canonical for digit classes).
    pub fn text(&self) -> &str {
        match self {
            Pattern::Exact(t) => t,
            Pattern::Digits { text, .. } | Pattern::Regex { text, .. } => text,
        }
    }

    /// Numbered groups a regex has (`${1}`...); 0 for the other kinds.
    pub fn groups(&self) -> usize {
        match self {
            Pattern::Regex { re, .. } => re.captures_len().saturating_sub(1),
            _ => 0,
        }
    }

    /// Whether `number` matches; with a regex, its groups (`[0]` is `${1}`, an unmatched
    /// group is empty).
    pub fn matches(&self, number: &str) -> Option<Vec<String>> {
        match self {
            Pattern::Exact(t) => (t == number).then(Vec::new),
            Pattern::Digits { elems, tail, .. } => {
                let keys: Vec<char> = number.chars().collect();
                if keys.len() < elems.len() {
                    return None;
                }
                let rest = keys.len() - elems.len();
                let tail_ok = match tail {
                    Tail::None => rest == 0,
                    Tail::OneOrMore => rest >= 1,
                    Tail::ZeroOrMore => true,
                };
                let fixed_ok = elems.iter().zip(&keys).all(|(e, &k)| match e {
                    Elem::Key(c) => *c == k,
                    Elem::Set(ranges) => ranges.iter().any(|&(lo, hi)| lo <= k && k <= hi),
                });
                (tail_ok && fixed_ok).then(Vec::new)
            }
            Pattern::Regex { re, .. } => {
                let caps = re.captures(number)?;
                // Group 0 is the whole match, group 1 our (?:...) wrapper is not a group.
                Some(
                    (1..caps.len())
                        .map(|i| caps.get(i).map_or(String::new(), |m| m.as_str().to_owned()))
                        .collect(),
                )
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(p: &str, n: &str) -> bool {
        Pattern::parse(p).unwrap().matches(n).is_some()
    }

    #[test]
    fn exact_numbers_match_only_themselves() {
        assert!(m("1000", "1000"));
        assert!(!m("1000", "10000"));
        assert!(!m("1000", "100"));
        assert!(m("*97", "*97"));
        assert!(!m("*97", "*971"));
    }

    #[test]
    fn digit_classes() {
        // X = 0-9
        assert!(m("_1XXX", "1000") && m("_1XXX", "1999"));
        assert!(!m("_1XXX", "2000") && !m("_1XXX", "100") && !m("_1XXX", "10000"));
        assert!(!m("_1XXX", "1*00"));
        // Z = 1-9
        assert!(m("_Z", "1") && m("_Z", "9") && !m("_Z", "0"));
        // N = 2-9
        assert!(m("_N", "2") && !m("_N", "1") && !m("_N", "0"));
        // lower case works too
        assert!(m("_1xxx", "1234"));
        // sets and ranges
        assert!(m("_[1-4]0", "30") && !m("_[1-4]0", "50"));
        assert!(m("_[13-5]", "1") && m("_[13-5]", "4") && !m("_[13-5]", "2"));
        assert!(m("_[*#]1", "#1"));
        // . one or more, ! zero or more
        assert!(m("_9.", "90049301234") && m("_9.", "91") && !m("_9.", "9"));
        assert!(m("_9!", "9") && m("_9!", "912"));
        // star and hash as keys
        assert!(m("_*XX", "*97") && !m("_*XX", "#97"));
    }

    #[test]
    fn canonical_spelling_makes_equal_patterns_equal() {
        assert_eq!(
            Pattern::parse("_1xxx").unwrap(),
            Pattern::parse("_1XXX").unwrap()
        );
        assert_ne!(
            Pattern::parse("_1XXX").unwrap(),
            Pattern::parse("_1XX").unwrap()
        );
    }

    #[test]
    fn bad_patterns_say_why() {
        let err = |p: &str| Pattern::parse(p).unwrap_err();
        assert!(err("").contains("empty"));
        assert!(err("_").contains("nothing after"));
        assert!(err("_9.1").contains("may only come last"));
        assert!(err("_1[3-").contains("range"), "{}", err("_1[3-"));
        assert!(err("_1[3").contains("closing ]"));
        assert!(err("_1[5-3]").contains("backwards"));
        assert!(err("_1Q").contains("'Q' means nothing"));
        assert!(err("10 00").contains("not a key"));
        assert!(err("_1[]").contains("holds no keys"));
    }

    #[test]
    fn regexes_match_whole_numbers_and_capture() {
        let p = Pattern::regex(r"0(\d+)").unwrap();
        assert_eq!(p.groups(), 1);
        assert_eq!(p.matches("0301234"), Some(vec!["301234".to_owned()]));
        assert_eq!(p.matches("10301234"), None, "anchored at the start");
        let alt = Pattern::regex("10|20").unwrap();
        assert!(alt.matches("10").is_some() && alt.matches("100").is_none());
        assert_eq!(alt.groups(), 0);
        assert!(Pattern::regex("(")
            .unwrap_err()
            .starts_with("bad regex \"(\""));
    }
}
