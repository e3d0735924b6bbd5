//! Request signing as the Standard Webhooks specification says:
//! `webhook-signature: v1,<base64 of HMAC-SHA256 over "{id}.{timestamp}.{body}">`,
//! where id and timestamp are the `webhook-id` and `webhook-timestamp`
//! headers every request carries.
//!
//! The key is the secret's (`Secret::signing_key`: `whsec_<base64>`, the
//! spec's format, decoded; any other secret as its raw bytes).

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::config::Secret;

/// The `webhook-signature` header value for one request.
pub fn sign(secret: &Secret, id: &str, timestamp: u64, body: &[u8]) -> String {
    let key = secret.signing_key();
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).expect("HMAC takes keys of any length");
    mac.update(format!("{id}.{timestamp}.").as_bytes());
    mac.update(body);
    format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example from the Standard Webhooks reference implementations.
    #[test]
    fn matches_the_specification_example() {
        let signature = sign(
            &Secret::new("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"),
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            br#"{"test": 2432232314}"#,
        );
        assert_eq!(signature, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }
}
