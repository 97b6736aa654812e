//! Facts about CPython's real struct layouts, as printed by the C oracle
//! (`tools/layout-oracle/oracle.c`), and their comparison with the mirrors.
//!
//! Keys are `"<C type>.<C field path>"` (`"PyThreadState.thread_id"`,
//! `"_PyRuntimeState.interpreters.head"`), the same in the oracle's output, in
//! the committed table ([`super::generated`]) and in each version module's
//! `mirror_facts()`.

use std::fmt;

/// One fact about a layout. `S` is the key's string type: `&'static str` in
/// the committed table, `String` when parsed from a live oracle run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fact<S = &'static str> {
    /// A field: `offsetof` and `sizeof` (for a flexible array member, the size
    /// of one element).
    Field {
        /// `"<C type>.<field path>"`.
        key: S,
        /// Byte offset from the start of the struct.
        offset: u64,
        /// Size in bytes.
        size: u64,
    },
    /// `sizeof` of a whole struct or type.
    Size {
        /// The C type name.
        key: S,
        /// Size in bytes.
        size: u64,
    },
    /// A bit field inside a 32-bit word (the word's offset is its own
    /// `Field` fact).
    Bits {
        /// `"<C type>.<word>.<bit field>"`.
        key: S,
        /// Position of the lowest bit.
        shift: u64,
        /// Width in bits.
        width: u64,
    },
    /// An enum value or macro constant (opcodes, frame states, owners).
    Const {
        /// The C name.
        key: S,
        /// Its value.
        value: i64,
    },
}

impl<S: AsRef<str>> Fact<S> {
    /// The fact's key.
    pub fn key(&self) -> &str {
        match self {
            Fact::Field { key, .. }
            | Fact::Size { key, .. }
            | Fact::Bits { key, .. }
            | Fact::Const { key, .. } => key.as_ref(),
        }
    }

    /// The same fact with an owned key, for comparisons across key types.
    pub fn to_owned_fact(&self) -> Fact<String> {
        let key = self.key().to_owned();
        match *self {
            Fact::Field { offset, size, .. } => Fact::Field { key, offset, size },
            Fact::Size { size, .. } => Fact::Size { key, size },
            Fact::Bits { shift, width, .. } => Fact::Bits { key, shift, width },
            Fact::Const { value, .. } => Fact::Const { key, value },
        }
    }
}

impl<S: AsRef<str>> fmt::Display for Fact<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fact::Field { offset, size, .. } => {
                write!(f, "F {} {offset} {size}", self.key())
            }
            Fact::Size { size, .. } => write!(f, "S {} {size}", self.key()),
            Fact::Bits { shift, width, .. } => write!(f, "B {} {shift} {width}", self.key()),
            Fact::Const { value, .. } => write!(f, "C {} {value}", self.key()),
        }
    }
}

/// What the oracle printed: the headers' `PY_VERSION_HEX` and the facts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OracleOutput {
    /// `PY_VERSION_HEX` of the headers compiled against.
    pub version_hex: u32,
    /// Every fact, in output order.
    pub facts: Vec<Fact<String>>,
}

/// A line of oracle output that could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("oracle output line {line}: cannot parse {text:?}")]
pub struct ParseError {
    /// 1-based line number.
    pub line: usize,
    /// The line.
    pub text: String,
}

/// Parses the oracle's text output.
pub fn parse(text: &str) -> Result<OracleOutput, ParseError> {
    let mut version_hex = 0;
    let mut facts = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let bad = || ParseError {
            line: i + 1,
            text: line.to_owned(),
        };
        let parts: Vec<&str> = line.split_whitespace().collect();
        let num = |s: &str| s.parse::<u64>().map_err(|_| bad());
        match parts.as_slice() {
            [] => {}
            ["V", hex] => version_hex = hex.parse().map_err(|_| bad())?,
            ["F", key, off, size] => facts.push(Fact::Field {
                key: (*key).to_owned(),
                offset: num(off)?,
                size: num(size)?,
            }),
            ["S", key, size] => facts.push(Fact::Size {
                key: (*key).to_owned(),
                size: num(size)?,
            }),
            ["B", key, shift, width] => facts.push(Fact::Bits {
                key: (*key).to_owned(),
                shift: num(shift)?,
                width: num(width)?,
            }),
            ["C", key, value] => facts.push(Fact::Const {
                key: (*key).to_owned(),
                value: value.parse().map_err(|_| bad())?,
            }),
            _ => return Err(bad()),
        }
    }
    Ok(OracleOutput { version_hex, facts })
}

/// Compares what the mirrors claim with what the headers say. Returns one
/// human-readable line per disagreement: a fact that differs, a fact the
/// mirrors claim that the headers lack, or a header fact the mirrors lack.
pub fn compare<A: AsRef<str>, B: AsRef<str>>(
    mirrors: &[Fact<A>],
    headers: &[Fact<B>],
) -> Vec<String> {
    let mut problems = Vec::new();
    for m in mirrors {
        match headers.iter().find(|h| h.key() == m.key()) {
            None => problems.push(format!(
                "mirror fact `{m}` has no counterpart in the headers"
            )),
            Some(h) if h.to_owned_fact() != m.to_owned_fact() => {
                problems.push(format!("mirror says `{m}`, headers say `{h}`"))
            }
            Some(_) => {}
        }
    }
    for h in headers {
        if !mirrors.iter().any(|m| m.key() == h.key()) {
            problems.push(format!("header fact `{h}` is not covered by the mirrors"));
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_compares() {
        let out = parse("V 50860784\nF PyObject.ob_type 8 8\nS digit 4\nB A.s.kind 2 3\nC X -2\n")
            .unwrap();
        assert_eq!(out.version_hex, 0x0308_12f0);
        assert_eq!(out.facts.len(), 4);
        let mirrors: Vec<Fact> = vec![
            Fact::Field {
                key: "PyObject.ob_type",
                offset: 8,
                size: 8,
            },
            Fact::Size {
                key: "digit",
                size: 4,
            },
            Fact::Bits {
                key: "A.s.kind",
                shift: 2,
                width: 3,
            },
            Fact::Const {
                key: "X",
                value: -1,
            },
        ];
        let p = compare(&mirrors, &out.facts);
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(p[0].contains("C X -1"));
        assert!(parse("F x y z").is_err());
    }
}
