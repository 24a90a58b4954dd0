//! The kernel's random numbers (getrandom, /dev/urandom, AT_RANDOM): xoshiro256** seeded through
//! SplitMix64, with fresh entropy (TSC readings, the wall clock) stirred in by the kernel as it goes.
//! Not cryptographically strong: this kernel has no entropy pool, and RDRAND cannot be used in kernel
//! mode here (the KVM instruction emulator of this host does not run it). Pure logic, host-tested.

/// SplitMix64: one step (used to expand seeds).
pub fn splitmix64(x: &mut u64) -> u64 {
    *x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *x;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// xoshiro256**.
#[derive(Clone, Debug)]
pub struct Rng {
    s: [u64; 4],
}

impl Rng {
    /// A generator from a seed (any value, zero included).
    pub const fn new() -> Rng {
        Rng {
            s: [
                0x180e_c6d3_3cfd_0aba,
                0xd5a6_1266_f0c9_392c,
                0xa958_2618_e03f_c9aa,
                0x39ab_dc45_29b1_661c,
            ],
        }
    }

    /// Mixes `entropy` into the state (the state never becomes all zero).
    pub fn stir(&mut self, entropy: u64) {
        let mut x = entropy ^ self.s[0];
        for w in self.s.iter_mut() {
            *w ^= splitmix64(&mut x);
        }
        if self.s == [0; 4] {
            self.s[0] = 1;
        }
    }

    pub fn next_u64(&mut self) -> u64 {
        let r = self.s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = self.s[1] << 17;
        self.s[2] ^= self.s[0];
        self.s[3] ^= self.s[1];
        self.s[1] ^= self.s[2];
        self.s[0] ^= self.s[3];
        self.s[2] ^= t;
        self.s[3] = self.s[3].rotate_left(45);
        r
    }

    /// Fills `out`.
    pub fn fill(&mut self, out: &mut [u8]) {
        for chunk in out.chunks_mut(8) {
            let v = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

impl Default for Rng {
    fn default() -> Self {
        Rng::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn different_entropy_different_streams() {
        let (mut a, mut b) = (Rng::new(), Rng::new());
        a.stir(1);
        b.stir(2);
        let (x, y) = (a.next_u64(), b.next_u64());
        assert_ne!(x, y);
        let mut buf = [0u8; 13];
        a.fill(&mut buf);
        assert!(buf.iter().any(|&v| v != 0));
    }

    #[test]
    fn bytes_look_uniform() {
        let mut r = Rng::new();
        r.stir(0x1234);
        let mut counts = [0u32; 256];
        let mut buf = [0u8; 4096];
        for _ in 0..64 {
            r.fill(&mut buf);
            for &b in buf.iter() {
                counts[b as usize] += 1;
            }
        }
        // 262144 bytes: 1024 expected per value; a generous band.
        assert!(
            counts.iter().all(|&c| (800..1250).contains(&c)),
            "{counts:?}"
        );
    }
}
