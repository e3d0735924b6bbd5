//! Webhook URLs as they may be shown: a token in the query or a password
//! in the user info is a secret, and logs and the dead-letter file are not
//! the place for it.

use url::Url;

/// The URL with its user info removed and every query value as `***`.
pub fn redact(url: &Url) -> String {
    let mut shown = url.clone();
    let _ = shown.set_username("");
    let _ = shown.set_password(None);
    if shown.query().is_some() {
        let pairs: Vec<String> = url.query_pairs().map(|(k, _)| format!("{k}=***")).collect();
        shown.set_query(Some(&pairs.join("&")));
    }
    shown.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_info_and_query_values_are_hidden() {
        let url = Url::parse("https://user:pw@hooks.example/h/1?token=s3cret&x=1").unwrap();
        assert_eq!(redact(&url), "https://hooks.example/h/1?token=***&x=***");
        let plain = Url::parse("http://127.0.0.1:8080/hook").unwrap();
        assert_eq!(redact(&plain), "http://127.0.0.1:8080/hook");
    }
}
