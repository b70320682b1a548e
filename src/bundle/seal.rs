//! The seal over a bundle's header: HMAC-SHA256 (RFC 2104) keyed by the image's private
//! client key, which travels only with the image (`images export`). A bundle that opens was
//! made by someone who holds the image.

use sha2::{Digest, Sha256};

/// SHA-256's block size, which HMAC pads its key to.
const BLOCK: usize = 64;
/// Keeps the seal's key apart from any other use of the client key's bytes.
const CONTEXT: &[u8] = b"vmrun bundle seal v1\0";

/// The key bundles of one image are sealed with.
#[derive(Clone)]
pub struct SealKey([u8; 32]);

impl SealKey {
    /// The key for bundles of the image whose private client key file holds `bytes`.
    pub fn from_client_key(bytes: &[u8]) -> SealKey {
        SealKey(
            Sha256::new_with_prefix(CONTEXT)
                .chain_update(bytes)
                .finalize()
                .into(),
        )
    }

    /// The seal of a header's JSON bytes.
    pub fn seal(&self, json: &[u8]) -> [u8; 32] {
        hmac_sha256(&self.0, json)
    }

    /// Whether `seal` is the seal of `json`, compared in constant time.
    pub fn matches(&self, json: &[u8], seal: &[u8; 32]) -> bool {
        let ours = self.seal(json);
        ours.iter()
            .zip(seal)
            .fold(0u8, |diff, (a, b)| diff | (a ^ b))
            == 0
    }
}

impl std::fmt::Debug for SealKey {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("SealKey(..)")
    }
}

/// HMAC-SHA256 per RFC 2104: H((K ^ opad) || H((K ^ ipad) || message)).
fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    let mut block = [0u8; BLOCK];
    if key.len() > BLOCK {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let padded = |pad: u8| block.map(|b| b ^ pad);
    let inner = Sha256::new_with_prefix(padded(0x36))
        .chain_update(message)
        .finalize();
    Sha256::new_with_prefix(padded(0x5c))
        .chain_update(inner)
        .finalize()
        .into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hex;

    /// RFC 4231's test cases 1 to 4, 6 and 7 (case 5 is truncated output).
    #[test]
    fn rfc_4231_vectors() {
        let cases: [(Vec<u8>, Vec<u8>, &str); 6] = [
            (
                vec![0x0b; 20],
                b"Hi There".to_vec(),
                "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7",
            ),
            (
                b"Jefe".to_vec(),
                b"what do ya want for nothing?".to_vec(),
                "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843",
            ),
            (
                vec![0xaa; 20],
                vec![0xdd; 50],
                "773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe",
            ),
            (
                hex::decode("0102030405060708090a0b0c0d0e0f10111213141516171819").unwrap(),
                vec![0xcd; 50],
                "82558a389a443c0ea4cc819899f2083a85f0faa3e578f8077a2e3ff46729665b",
            ),
            (
                vec![0xaa; 131],
                b"Test Using Larger Than Block-Size Key - Hash Key First".to_vec(),
                "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54",
            ),
            (
                vec![0xaa; 131],
                b"This is a test using a larger than block-size key and a larger than \
                  block-size data. The key needs to be hashed before being used by the \
                  HMAC algorithm."
                    .to_vec(),
                "9b09ffa71b942fcb27635fbcd5b0e944bfdc63644f0713938a7f51535c3a35e2",
            ),
        ];
        for (key, message, expected) in cases {
            assert_eq!(hex::encode(&hmac_sha256(&key, &message)), expected);
        }
    }

    #[test]
    fn a_seal_matches_its_json_and_key_only() {
        let key = SealKey::from_client_key(b"PRIVATE\n");
        let seal = key.seal(b"{}");
        assert!(key.matches(b"{}", &seal));
        assert!(!key.matches(b"{ }", &seal));
        assert!(!SealKey::from_client_key(b"OTHER\n").matches(b"{}", &seal));
        let mut flipped = seal;
        flipped[31] ^= 1;
        assert!(!key.matches(b"{}", &flipped));
    }
}
