//! Base64 and deterministic pseudo-random bytes for the simulator's keys, certificates and
//! share tokens. None of it is cryptographic: it only has to look right and be stable.

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding.
pub fn base64(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The bytes of standard base64 (padding optional); `None` for any other character.
pub fn unbase64(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() / 4 * 3);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in text.trim_end_matches('=').bytes() {
        let sextet = ALPHABET.iter().position(|a| *a == c)? as u32;
        acc = (acc << 6) | sextet;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

/// `len` bytes that depend only on `seed` (FNV-1a of it seeds the generator).
pub fn pseudo_bytes(seed: &[u8], len: usize) -> Vec<u8> {
    let hash = seed.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3)
    });
    let mut rng = fastrand::Rng::with_seed(hash);
    (0..len).map(|_| rng.u8(..)).collect()
}

/// Lowercase hexadecimal.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_round_trips_and_matches_the_standard_alphabet() {
        assert_eq!(base64(b"{\"iv\":"), "eyJpdiI6");
        assert_eq!(base64(b"ab"), "YWI=");
        assert_eq!(base64(b"a"), "YQ==");
        for len in 0..40 {
            let bytes = pseudo_bytes(&[len as u8], len);
            assert_eq!(unbase64(&base64(&bytes)), Some(bytes), "{len} bytes");
        }
        assert_eq!(unbase64("YWI"), Some(b"ab".to_vec()), "padding is optional");
        assert_eq!(unbase64("YW*="), None);
    }

    #[test]
    fn pseudo_bytes_depend_on_the_seed_only() {
        assert_eq!(pseudo_bytes(b"x", 8), pseudo_bytes(b"x", 8));
        assert_ne!(pseudo_bytes(b"x", 8), pseudo_bytes(b"y", 8));
        assert_eq!(hex(&[0, 0xab]), "00ab");
    }
}
