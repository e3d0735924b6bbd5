//! `[history]`: how long transitions are kept, and how much room they may
//! take.

use std::time::Duration;

use toml::Spanned;

use super::Validator;
use crate::config::error::Problem;
use crate::config::raw::RawHistory;
use crate::config::{DEFAULT_HISTORY_KEEP, DEFAULT_HISTORY_MAX_SIZE, MAX_HISTORY_KEEP, MIN_HISTORY_MAX_SIZE};

impl Validator<'_> {
    /// `keep` (zero: no history) and `max_size` in bytes.
    pub(super) fn history(&mut self, raw: Option<RawHistory>) -> (Duration, u64) {
        let (keep, max_size) = raw.map_or((None, None), |h| (h.keep, h.max_size));
        let keep = self
            .duration_up_to(&keep, DEFAULT_HISTORY_KEEP, "keep", Duration::ZERO, MAX_HISTORY_KEEP)
            .unwrap_or_default();
        (keep, max_size.and_then(|raw| self.history_max_size(&raw)).unwrap_or(DEFAULT_HISTORY_MAX_SIZE))
    }

    /// A size such as `"500 MiB"` or `"2 GB"`, at least `MIN_HISTORY_MAX_SIZE`.
    fn history_max_size(&mut self, raw: &Spanned<String>) -> Option<u64> {
        let least = bytesize::ByteSize::b(MIN_HISTORY_MAX_SIZE).display().iec();
        let hint = format!("a size such as \"500 MiB\" or \"2 GB\", at least {least}");
        match raw.get_ref().trim().parse::<bytesize::ByteSize>() {
            Ok(size) if size.as_u64() >= MIN_HISTORY_MAX_SIZE => Some(size.as_u64()),
            Ok(size) => {
                let too_small = format!("`max_size` {} is too small: history needs room to work", size.display().iec());
                self.problem(Problem::new(raw.span(), too_small).hint(hint));
                None
            }
            Err(_) => {
                let bad = format!("`max_size` `{}` is not a size", raw.get_ref());
                self.problem(Problem::new(raw.span(), bad).hint(hint));
                None
            }
        }
    }
}
