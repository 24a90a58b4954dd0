//! KVM's structs in a snapshot's JSON as hex strings, not arrays of byte numbers.
//!
//! kvm-bindings serializes each KVM struct as its raw bytes, which JSON writes as an array of numbers
//! (the 4 KiB XSAVE area alone is 12 KB of them); reading those back, one number at a time, was about
//! 0.35 ms of a 1.4 ms restore. As one hex string the same bytes decode in a few microseconds. Use as
//! `#[serde(with = "hex")]` on a KVM struct and `#[serde(with = "hex::vec")]` on a `Vec` of them; decoding
//! hands the bytes to kvm-bindings' own deserializer (which zero-pads or truncates a struct of another
//! size, as for its byte arrays).

use serde::de::{value::BytesDeserializer, DeserializeOwned, Error as _};
use serde::{Deserialize, Deserializer, Serializer};
use zerocopy::{Immutable, IntoBytes};

fn encode(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 15)]));
    }
    s
}

fn decode(s: &str) -> Option<Vec<u8>> {
    /// A digit's value; 0xff (over 15) for anything else.
    fn digit(c: u8) -> u8 {
        match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            _ => 0xff,
        }
    }
    if !s.len().is_multiple_of(2) {
        return None;
    }
    // A plain loop (an iterator of Options collected was ~100 us of a restore's 25 KiB state file in the
    // size-optimized build); the bad digits are checked once at the end.
    let mut out = vec![0u8; s.len() / 2];
    let mut seen = 0u8;
    for (o, p) in out.iter_mut().zip(s.as_bytes().chunks_exact(2)) {
        let (hi, lo) = (digit(p[0]), digit(p[1]));
        seen |= hi | lo;
        *o = hi << 4 | lo & 15;
    }
    (seen <= 15).then_some(out)
}

fn from_hex<'de, T: DeserializeOwned, D: Deserializer<'de>>(s: &str) -> Result<T, D::Error> {
    let bytes = decode(s).ok_or_else(|| D::Error::custom("not a lower-case hex string"))?;
    T::deserialize(BytesDeserializer::<D::Error>::new(&bytes))
}

/// Serializes a KVM struct as a hex string.
pub fn serialize<T: IntoBytes + Immutable, S: Serializer>(v: &T, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&encode(v.as_bytes()))
}

/// Deserializes a KVM struct from a hex string.
pub fn deserialize<'de, T: DeserializeOwned, D: Deserializer<'de>>(d: D) -> Result<T, D::Error> {
    let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
    from_hex::<T, D>(&s)
}

/// The same for a `Vec` of KVM structs: an array of hex strings.
pub mod vec {
    use super::*;
    use serde::ser::SerializeSeq;

    pub fn serialize<T: IntoBytes + Immutable, S: Serializer>(
        v: &[T],
        s: S,
    ) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(v.len()))?;
        for e in v {
            seq.serialize_element(&encode(e.as_bytes()))?;
        }
        seq.end()
    }

    pub fn deserialize<'de, T: DeserializeOwned, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Vec<T>, D::Error> {
        let v = <Vec<std::borrow::Cow<'de, str>>>::deserialize(d)?;
        v.iter().map(|s| from_hex::<T, D>(s)).collect()
    }
}

#[cfg(test)]
mod tests {
    use kvm_bindings::{kvm_msr_entry, kvm_xsave};

    #[derive(serde::Serialize, serde::Deserialize)]
    struct S {
        #[serde(with = "super")]
        xsave: kvm_xsave,
        #[serde(with = "super::vec")]
        msrs: Vec<kvm_msr_entry>,
    }

    #[test]
    fn round_trip_and_bad_strings() {
        let mut xsave = kvm_xsave::default();
        xsave.region[0] = 0x1234_5678;
        xsave.region[1023] = 0xffff_ffff;
        let msrs = vec![
            kvm_msr_entry {
                index: 0x10,
                data: 42,
                ..Default::default()
            };
            3
        ];
        let json = serde_json::to_string(&S { xsave, msrs }).unwrap();
        assert!(json.starts_with(r#"{"xsave":"78563412"#), "{}", &json[..40]);
        let back: S = serde_json::from_str(&json).unwrap();
        assert_eq!(back.xsave.region[0], 0x1234_5678);
        assert_eq!(back.xsave.region[1023], 0xffff_ffff);
        assert_eq!(back.msrs.len(), 3);
        assert_eq!((back.msrs[2].index, back.msrs[2].data), (0x10, 42));
        for bad in [r#""0g""#, r#""abc""#, r#""AB""#, "[1,2]"] {
            let json = format!(r#"{{"xsave":{bad},"msrs":[]}}"#);
            assert!(serde_json::from_str::<S>(&json).is_err(), "{bad}");
        }
    }
}
