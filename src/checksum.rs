//! FNV-1a 64-bit checksums, as hex: they detect truncation, corruption and changed files (not
//! a security measure). Checkpoints, sweep plans and data manifests use them.

/// The FNV-1a 64-bit checksum of `bytes`, as 16 hex digits.
pub fn checksum(bytes: &[u8]) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in bytes {
        hash ^= *byte as u64;
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{hash:016x}")
}

#[cfg(test)]
mod tests {
    #[test]
    fn known_values() {
        assert_eq!(super::checksum(b""), "cbf29ce484222325");
        assert_eq!(super::checksum(b"a"), "af63dc4c8601ec8c");
    }
}
