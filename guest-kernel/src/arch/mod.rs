//! Architecture support. Only x86-64 exists; its items are re-exported as `crate::arch::*`.

pub mod x86_64;
pub use self::x86_64::*;
