//! Shared pieces of the fuzz targets in `tests/`.
//!
//! Random bytes rarely get past a parser's first check, so most targets start
//! from a real document (a provider's sample payload, a bundled manifest, a
//! calendar export) and let the fuzzer edit it: the input chooses the seed and
//! a list of byte edits. Coverage-guided engines then explore from there.

use std::time::Duration;

/// How long each target runs under `cargo test`: a smoke run by default,
/// `PRESENCE_FUZZ_SECONDS` for a longer random run on a stable toolchain.
pub fn test_time() -> Duration {
    std::env::var("PRESENCE_FUZZ_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .map_or(Duration::from_secs(2), Duration::from_secs)
}

/// One edit: at `pos` (modulo the length), replace, insert or delete a byte.
pub type Edit = (u16, u8, u8);

/// `seed` with `edits` applied in order.
pub fn mutate(seed: &[u8], edits: &[Edit]) -> Vec<u8> {
    let mut out = seed.to_vec();
    for &(pos, op, byte) in edits {
        let len = out.len();
        match op % 3 {
            0 if len > 0 => out[pos as usize % len] = byte,
            1 => out.insert(pos as usize % (len + 1), byte),
            2 if len > 0 => {
                out.remove(pos as usize % len);
            }
            _ => out.push(byte),
        }
    }
    out
}

/// The seed chosen by `index` among `seeds`, edited.
pub fn pick(seeds: &[&[u8]], index: u8, edits: &[Edit]) -> Vec<u8> {
    mutate(seeds[index as usize % seeds.len()], edits)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edits_replace_insert_and_delete() {
        assert_eq!(mutate(b"abc", &[(1, 0, b'X')]), b"aXc");
        assert_eq!(mutate(b"abc", &[(3, 1, b'X')]), b"abcX");
        assert_eq!(mutate(b"abc", &[(4, 2, 0)]), b"ac");
        assert_eq!(mutate(b"", &[(9, 0, b'X')]), b"X");
        assert_eq!(mutate(b"", &[(9, 2, 0)]), b"\0");
    }
}
