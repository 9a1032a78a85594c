//! Deterministic synthetic chunk content for `backhaul demo`, the lab's camera simulator and
//! tests: the same seed always gives the same bytes, so a reader can regenerate and compare
//! what was written without keeping a copy.

/// `len` pseudo-random bytes from `seed` (xorshift64; incompressible enough for transfer tests,
/// not for cryptography).
pub fn chunk_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_bytes() {
        assert_eq!(chunk_bytes(7, 1000), chunk_bytes(7, 1000));
        assert_ne!(chunk_bytes(7, 1000), chunk_bytes(8, 1000));
        assert_eq!(chunk_bytes(1, 13).len(), 13);
    }
}
