//! Message and envelope ids, shown as OpenSMTPD shows them so that `smtpctl`
//! users see familiar ids: a message id is 8 lowercase hex digits, an
//! envelope id 16, the message id being its first 8.

use std::fmt;
use std::num::NonZeroU32;
use std::str::FromStr;

use crate::random::Urandom;

/// Why a text is not an id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("expected {expected} hex digits, got {got} bytes")]
    Length { expected: usize, got: usize },
    #[error("not a lowercase hex digit: byte {0:#04x}")]
    NotLowerHex(u8),
    #[error("the message id part is zero")]
    Zero,
}

/// A message id: random, never 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MsgId(NonZeroU32);

impl MsgId {
    /// `None` for 0, which is never a message id.
    pub fn new(raw: u32) -> Option<MsgId> {
        NonZeroU32::new(raw).map(MsgId)
    }

    pub fn get(self) -> u32 {
        self.0.get()
    }

    /// A fresh random id.
    pub fn random(rng: &Urandom) -> std::io::Result<MsgId> {
        loop {
            if let Some(id) = MsgId::new(rng.next_u32()?) {
                return Ok(id);
            }
        }
    }

    /// The spool bucket: the first two hex digits.
    pub fn bucket(self) -> String {
        format!("{:02x}", self.get() >> 24)
    }
}

/// An envelope id: the message id in the high 32 bits, random low bits.
/// Held as its two halves, so an id whose message part is 0 cannot exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EnvelopeId {
    msg: MsgId,
    low: u32,
}

impl EnvelopeId {
    pub fn new(msgid: MsgId, low: u32) -> EnvelopeId {
        EnvelopeId { msg: msgid, low }
    }

    /// `None` when the message id part (high 32 bits) is 0.
    pub fn from_u64(raw: u64) -> Option<EnvelopeId> {
        Some(EnvelopeId {
            msg: MsgId::new((raw >> 32) as u32)?,
            low: raw as u32,
        })
    }

    pub fn get(self) -> u64 {
        (u64::from(self.msg.get()) << 32) | u64::from(self.low)
    }

    pub fn msgid(self) -> MsgId {
        self.msg
    }

    /// A fresh random envelope id of message `msgid`.
    pub fn random(msgid: MsgId, rng: &Urandom) -> std::io::Result<EnvelopeId> {
        Ok(EnvelopeId::new(msgid, rng.next_u32()?))
    }
}

fn parse_hex(s: &str, digits: usize) -> Result<u64, IdError> {
    let b = s.as_bytes();
    if b.len() != digits {
        return Err(IdError::Length {
            expected: digits,
            got: b.len(),
        });
    }
    let mut v = 0u64;
    for &c in b {
        let d = match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            _ => return Err(IdError::NotLowerHex(c)),
        };
        v = (v << 4) | u64::from(d);
    }
    Ok(v)
}

impl FromStr for MsgId {
    type Err = IdError;
    /// Exactly 8 lowercase hex digits, not all zero.
    fn from_str(s: &str) -> Result<MsgId, IdError> {
        let v = parse_hex(s, 8)?;
        MsgId::new(v as u32).ok_or(IdError::Zero)
    }
}

impl FromStr for EnvelopeId {
    type Err = IdError;
    /// Exactly 16 lowercase hex digits, the first 8 not all zero.
    fn from_str(s: &str) -> Result<EnvelopeId, IdError> {
        let v = parse_hex(s, 16)?;
        EnvelopeId::from_u64(v).ok_or(IdError::Zero)
    }
}

impl fmt::Display for MsgId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:08x}", self.get())
    }
}

impl fmt::Display for EnvelopeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.get())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_and_parse() {
        let m = MsgId::new(0x0e07_f53e).unwrap();
        assert_eq!(m.to_string(), "0e07f53e");
        assert_eq!("0e07f53e".parse::<MsgId>(), Ok(m));
        assert_eq!(m.bucket(), "0e");
        let e = EnvelopeId::new(m, 0x9d06_e807);
        assert_eq!(e.to_string(), "0e07f53e9d06e807");
        assert_eq!("0e07f53e9d06e807".parse::<EnvelopeId>(), Ok(e));
        assert_eq!(e.msgid(), m);
        assert_eq!(EnvelopeId::new(m, 0).to_string(), "0e07f53e00000000");
        let max = MsgId::new(u32::MAX).unwrap();
        assert_eq!(EnvelopeId::new(max, u32::MAX).get(), u64::MAX);
        assert_eq!(EnvelopeId::new(max, 7).msgid(), max);
    }

    #[test]
    fn strict_parse() {
        assert_eq!("00000000".parse::<MsgId>(), Err(IdError::Zero));
        assert_eq!("0E07F53E".parse::<MsgId>(), Err(IdError::NotLowerHex(b'E')));
        assert_eq!(
            "e07f53e".parse::<MsgId>(),
            Err(IdError::Length {
                expected: 8,
                got: 7
            })
        );
        assert_eq!("+e07f53e".parse::<MsgId>(), Err(IdError::NotLowerHex(b'+')));
        assert_eq!(" e07f53e".parse::<MsgId>(), Err(IdError::NotLowerHex(b' ')));
        assert_eq!("00000000ffffffff".parse::<EnvelopeId>(), Err(IdError::Zero));
        assert_eq!(
            "0e07f53e9d06e8070".parse::<EnvelopeId>(),
            Err(IdError::Length {
                expected: 16,
                got: 17
            })
        );
        assert_eq!(EnvelopeId::from_u64(0xffff_ffff), None);
        // A multi-byte char is reported by its first byte, never panics.
        assert_eq!(
            "é0000000".parse::<MsgId>(),
            Err(IdError::Length {
                expected: 8,
                got: 9
            })
        );
        assert_eq!("é000000".parse::<MsgId>(), Err(IdError::NotLowerHex(0xc3)));
    }

    #[test]
    fn random_ids_are_valid() {
        let r = Urandom::open().unwrap();
        for _ in 0..100 {
            let m = MsgId::random(&r).unwrap();
            let e = EnvelopeId::random(m, &r).unwrap();
            assert_eq!(e.msgid(), m);
            assert_eq!(e.to_string().parse::<EnvelopeId>(), Ok(e));
        }
    }
}
