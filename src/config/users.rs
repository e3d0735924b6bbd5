//! `[http] users_file`: who may read the HTTP endpoint. One `user:hash`
//! a line (`htpasswd -B` writes them), bcrypt hashes only, as Prometheus's
//! web configuration takes them; `#` comments and blank lines ignored.

use std::collections::HashMap;
use std::sync::Mutex;

/// The users and their bcrypt hashes, with the credentials already
/// verified (bcrypt is slow on purpose; a page polls).
#[derive(Debug, Default)]
pub struct Users {
    hashes: HashMap<String, String>,
    verified: Mutex<HashMap<String, String>>,
}

/// Most verified credentials remembered; past it the memory starts over.
const REMEMBERED: usize = 64;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UsersError {
    #[error("line {0}: write user:hash")]
    Shape(usize),
    #[error("line {0}: the hash of `{1}` is not bcrypt ($2a$, $2b$ or $2y$); make it with htpasswd -nB {1}")]
    NotBcrypt(usize, String),
    #[error("line {0}: user `{1}` is listed twice")]
    Twice(usize, String),
    #[error("it lists no user")]
    Empty,
}

impl PartialEq for Users {
    fn eq(&self, other: &Users) -> bool {
        self.hashes == other.hashes
    }
}

impl Users {
    pub fn parse(text: &str) -> Result<Users, UsersError> {
        let mut hashes = HashMap::new();
        for (n, line) in text.lines().enumerate().map(|(i, l)| (i + 1, l.trim())) {
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (user, hash) =
                line.split_once(':').filter(|(u, h)| !u.is_empty() && !h.is_empty()).ok_or(UsersError::Shape(n))?;
            if !["$2a$", "$2b$", "$2y$"].iter().any(|p| hash.starts_with(p)) {
                return Err(UsersError::NotBcrypt(n, user.to_string()));
            }
            if hashes.insert(user.to_string(), hash.to_string()).is_some() {
                return Err(UsersError::Twice(n, user.to_string()));
            }
        }
        if hashes.is_empty() {
            return Err(UsersError::Empty);
        }
        Ok(Users { hashes, verified: Mutex::default() })
    }

    /// Whether `password` is `user`'s.
    pub fn verify(&self, user: &str, password: &str) -> bool {
        let Some(hash) = self.hashes.get(user) else { return false };
        let key = format!("{user}:{password}");
        if self.verified.lock().expect("not poisoned").get(&key) == Some(hash) {
            return true;
        }
        let ok = bcrypt::verify(password, hash).unwrap_or(false);
        if ok {
            let mut verified = self.verified.lock().expect("not poisoned");
            if verified.len() >= REMEMBERED {
                verified.clear();
            }
            verified.insert(key, hash.clone());
        }
        ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bcrypt_users_verify_and_anything_else_is_refused_with_its_line() {
        let hash = bcrypt::hash("s3cret", 4).unwrap();
        let users = Users::parse(&format!("# operators\nops:{hash}\n")).unwrap();
        assert!(users.verify("ops", "s3cret"));
        assert!(users.verify("ops", "s3cret"), "remembered");
        assert!(!users.verify("ops", "wrong") && !users.verify("root", "s3cret"));
        assert_eq!(Users::parse("ops:plain").unwrap_err(), UsersError::NotBcrypt(1, "ops".into()));
        assert_eq!(Users::parse("\nnocolon").unwrap_err(), UsersError::Shape(2));
        assert_eq!(Users::parse("# none\n").unwrap_err(), UsersError::Empty);
        let twice = format!("a:{hash}\na:{hash}\n");
        assert_eq!(Users::parse(&twice).unwrap_err(), UsersError::Twice(2, "a".into()));
    }
}
