//! Request signing as the Standard Webhooks specification says:
//! `webhook-signature: v1,<base64 of HMAC-SHA256 over "{id}.{timestamp}.{body}">`,
//! where id and timestamp are the `webhook-id` and `webhook-timestamp`
//! headers every request carries.
//!
//! A secret written as `whsec_<base64>` (the spec's format) is decoded; any
//! other secret is used as its raw bytes.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The `webhook-signature` header value for one request.
pub fn sign(secret: &str, id: &str, timestamp: u64, body: &[u8]) -> String {
    let key = match secret.strip_prefix("whsec_").map(|b| STANDARD.decode(b)) {
        Some(Ok(key)) => key,
        _ => secret.as_bytes().to_vec(),
    };
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
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            br#"{"test": 2432232314}"#,
        );
        assert_eq!(signature, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }
}
