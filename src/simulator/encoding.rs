//! Base64 and deterministic pseudo-random bytes for the simulator's keys, certificates and
//! share tokens. None of it is cryptographic: it only has to look right and be stable.

use base64::Engine;
use base64::alphabet;
use base64::engine::DecodePaddingMode;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};

/// Standard base64 that decodes with or without padding.
const LENIENT: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Standard base64 with padding.
pub fn base64(bytes: &[u8]) -> String {
    STANDARD.encode(bytes)
}

/// The bytes of standard base64 (padding optional); `None` for anything else.
pub fn unbase64(text: &str) -> Option<Vec<u8>> {
    LENIENT.decode(text).ok()
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
