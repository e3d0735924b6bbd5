//! `[http] users_file`: who may read the HTTP endpoint. One `user:hash`
//! a line (`htpasswd -B` writes them), bcrypt hashes only, as Prometheus's
//! web configuration takes them; `#` comments and blank lines ignored.
//!
//! A refusal costs one bcrypt verification whoever asks: a user who is not
//! in the file is verified against a stand-in hash, so how long a refusal
//! takes does not tell which users exist.

use std::collections::HashMap;
use std::sync::Mutex;

/// The users and their bcrypt hashes, with the credentials already
/// verified (bcrypt is slow on purpose; a page polls).
#[derive(Debug, Default)]
pub struct Users {
    hashes: HashMap<String, String>,
    /// What a user not in the file is verified against (and refused
    /// whatever the outcome): a valid hash of the file's highest cost.
    stand_in: String,
    verified: Mutex<HashMap<String, String>>,
}

/// The highest bcrypt cost taken: 2^16 rounds, about 4 s of a core; each
/// step doubles it (cost 31 is a day).
pub const MAX_COST: u32 = 16;

/// Most verified credentials remembered; past it the memory starts over.
const REMEMBERED: usize = 64;

/// The salt and hash of `stand_in` (OpenBSD's bcrypt test vector for
/// `U*U`): any cost can be put in front of them.
const STAND_IN: &str = "CCCCCCCCCCCCCCCCCCCCC.E5YPO9kmyuRGyh0XouQYb4YMJKvyOeW";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UsersError {
    #[error("line {0}: write user:hash")]
    Shape(usize),
    #[error("line {0}: the hash of `{1}` is not bcrypt ($2a$, $2b$ or $2y$); make it with htpasswd -nB {1}")]
    NotBcrypt(usize, String),
    #[error(
        "line {0}: the hash of `{1}` is not one bcrypt can use (a cost from 04 to 31, `$`, 53 characters of ./A-Za-z0-9), so every login of `{1}` would fail; make it again with htpasswd -nB {1}"
    )]
    Unusable(usize, String),
    #[error(
        "line {0}: the hash of `{1}` has cost {2}, more than {MAX_COST}: each of its logins (and each of a user not in the file) would take over 4 s of a core; make it again with htpasswd -nB -C 12 {1}"
    )]
    TooDear(usize, String, u32),
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
            match cost(hash) {
                None => return Err(UsersError::Unusable(n, user.to_string())),
                Some(dear) if dear > MAX_COST => return Err(UsersError::TooDear(n, user.to_string(), dear)),
                Some(_) => {}
            }
            if hashes.insert(user.to_string(), hash.to_string()).is_some() {
                return Err(UsersError::Twice(n, user.to_string()));
            }
        }
        let Some(highest) = hashes.values().filter_map(|h| cost(h)).max() else {
            return Err(UsersError::Empty);
        };
        let stand_in = format!("$2b${highest:02}${STAND_IN}");
        Ok(Users { hashes, stand_in, verified: Mutex::default() })
    }

    /// The costs of the hashes, lowest and highest, when they differ: a
    /// login of a user of a lower cost is answered sooner than one of a
    /// user not in the file, so its time tells that the user exists.
    pub fn mixed_costs(&self) -> Option<(u32, u32)> {
        let costs = || self.hashes.values().filter_map(|h| cost(h));
        let (low, high) = (costs().min()?, costs().max()?);
        (low != high).then_some((low, high))
    }

    /// Whether this user's password was verified before (no bcrypt run).
    pub fn remembered(&self, user: &str, password: &str) -> bool {
        let Some(hash) = self.hashes.get(user) else { return false };
        self.verified.lock().expect("not poisoned").get(&format!("{user}:{password}")) == Some(hash)
    }

    /// Whether `password` is `user`'s.
    pub fn verify(&self, user: &str, password: &str) -> bool {
        let Some(hash) = self.hashes.get(user) else {
            // As long as a wrong password takes, and false whatever it says.
            let _ = bcrypt::verify(password, &self.stand_in);
            return false;
        };
        if self.remembered(user, password) {
            return true;
        }
        let key = format!("{user}:{password}");
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

/// The cost of a bcrypt hash bcrypt can use (`$2b$10$` and 53 characters
/// of its alphabet), `None` for any other text.
fn cost(hash: &str) -> Option<u32> {
    let (cost, rest) = hash.get(4..)?.split_once('$')?;
    let alphabet = |c: char| c.is_ascii_alphanumeric() || c == '.' || c == '/';
    let cost = cost.parse().ok().filter(|c| cost.len() == 2 && (4..=31).contains(c))?;
    (rest.len() == 53 && rest.chars().all(alphabet)).then_some(cost)
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

    #[test]
    fn a_hash_bcrypt_cannot_use_is_refused_with_its_line() {
        let hash = bcrypt::hash("s3cret", 4).unwrap();
        for bad in ["$2b$10$short", "$2b$1$x", "$2b$99$", &hash.replace("$04$", "$4$"), &format!("{hash}x")] {
            let text = format!("ops:{hash}\nguest:{bad}\n");
            assert_eq!(Users::parse(&text).unwrap_err(), UsersError::Unusable(2, "guest".into()), "{bad}");
        }
    }

    #[test]
    fn a_cost_past_the_limit_is_refused_and_mixed_costs_are_told() {
        let hash = bcrypt::hash("s3cret", 4).unwrap();
        let dear = hash.replace("$04$", "$17$");
        assert_eq!(
            Users::parse(&format!(
                "ops:{dear}
"
            ))
            .unwrap_err(),
            UsersError::TooDear(1, "ops".into(), 17)
        );
        let five = bcrypt::hash("b", 5).unwrap();
        assert_eq!(
            Users::parse(&format!(
                "a:{hash}
b:{five}
"
            ))
            .unwrap()
            .mixed_costs(),
            Some((4, 5))
        );
        assert_eq!(
            Users::parse(&format!(
                "a:{hash}
"
            ))
            .unwrap()
            .mixed_costs(),
            None
        );
    }

    #[test]
    fn an_unknown_user_is_verified_against_a_stand_in_of_the_highest_cost() {
        let (cheap, dear) = (bcrypt::hash("a", 4).unwrap(), bcrypt::hash("b", 5).unwrap());
        let users = Users::parse(&format!("a:{cheap}\nb:{dear}\n")).unwrap();
        assert!(users.stand_in.starts_with("$2b$05$"), "{}", users.stand_in);
        // A hash bcrypt works through (one it cannot use is refused at once):
        // at cost 5 it is the test vector itself.
        assert_eq!(bcrypt::verify("U*U", &users.stand_in).ok(), Some(true));
        assert!(!users.verify("nobody", "U*U") && !users.verify("nobody", "a"));
    }
}
