//! `[history]`: how long transitions are kept, and how much room they may
//! take.

use std::time::Duration;

use toml::Spanned;

use super::Validator;
use crate::config::error::Problem;
use crate::config::raw::RawHistory;
use crate::config::{
    DEFAULT_HISTORY_KEEP, DEFAULT_HISTORY_MAX_SIZE, MAX_HISTORY_KEEP, MAX_HISTORY_MAX_SIZE, MIN_HISTORY_MAX_SIZE,
};

impl Validator<'_> {
    /// `keep` (zero: no history) and `max_size` in bytes.
    pub(super) fn history(&mut self, raw: Option<RawHistory>) -> (Duration, u64) {
        let (keep, max_size) = raw.map_or((None, None), |h| (h.keep, h.max_size));
        let keep = self
            .duration_up_to(&keep, DEFAULT_HISTORY_KEEP, "keep", Duration::ZERO, MAX_HISTORY_KEEP)
            .unwrap_or_default();
        (keep, max_size.and_then(|raw| self.history_max_size(&raw)).unwrap_or(DEFAULT_HISTORY_MAX_SIZE))
    }

    /// A size such as `"500 MiB"` or `"2 GB"`, from `MIN_HISTORY_MAX_SIZE`
    /// to `MAX_HISTORY_MAX_SIZE` (the parser saturates: a size past any
    /// disk would silently mean no bound).
    fn history_max_size(&mut self, raw: &Spanned<String>) -> Option<u64> {
        let iec = |bytes| bytesize::ByteSize::b(bytes).display().iec().to_string();
        let (least, most) = (iec(MIN_HISTORY_MAX_SIZE), iec(MAX_HISTORY_MAX_SIZE));
        let hint = format!("a size such as \"500 MiB\" or \"2 GB\", from {least} to {most}");
        let problem = match raw.get_ref().trim().parse::<bytesize::ByteSize>() {
            Ok(size) if (MIN_HISTORY_MAX_SIZE..=MAX_HISTORY_MAX_SIZE).contains(&size.as_u64()) => {
                return Some(size.as_u64());
            }
            Ok(size) if size.as_u64() < MIN_HISTORY_MAX_SIZE => {
                format!("`max_size` {} is too small: history needs room to work", iec(size.as_u64()))
            }
            Ok(_) => format!("`max_size` is larger than {most}"),
            // The value itself is not repeated: it can be any length.
            Err(_) => "`max_size` is not a size".to_string(),
        };
        self.problem(Problem::new(raw.span(), problem).hint(hint));
        None
    }
}
