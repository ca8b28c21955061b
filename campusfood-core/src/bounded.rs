//! Bounded text: every reason, header and error message that may carry a
//! piece of its input goes through here, so that no input can make them
//! large.
//!
//! Why it matters: a dead letter's reason travels in a message header. A
//! reason that copied a 200 KB `order_id` made a header frame larger than
//! RabbitMQ's `frame_max`, the broker closed the shared connection
//! (`501 FRAME_ERROR`) and every consumer reconnected and met the same
//! message again; on Kafka such a reason can push the dead-letter record
//! past the broker's size limit and stall the partition. So:
//!
//! - [`reason`] bounds a reason (or any header value we write) to
//!   [`MAX_REASON_BYTES`], cut at a character boundary and marked with an
//!   ellipsis and the original length, e.g. `…(204800 bytes)`;
//! - [`preview`] and [`preview_display`] give the short, quoted preview
//!   that error messages show of an offending value.

use std::borrow::Cow;
use std::fmt::{self, Write as _};

/// The longest reason (and header value) the transports write: 1 KiB.
pub const MAX_REASON_BYTES: usize = 1024;

/// How much of an offending value an error message shows.
pub const PREVIEW_BYTES: usize = 64;

/// `text` if it is at most `max` bytes; otherwise its longest prefix that
/// ends on a character boundary and leaves room for the marker
/// `…(<original length> bytes)`, followed by that marker. The result is
/// never longer than `max` bytes (when `max` cannot even hold the marker,
/// the cut prefix alone).
pub fn truncate(text: &str, max: usize) -> Cow<'_, str> {
    if text.len() <= max {
        return Cow::Borrowed(text);
    }
    let marker = format!("…({} bytes)", text.len());
    let room = max.checked_sub(marker.len());
    let cut = floor_char_boundary(text, room.unwrap_or(max));
    let mut out = String::with_capacity(max);
    out.push_str(&text[..cut]);
    if room.is_some() {
        out.push_str(&marker);
    }
    Cow::Owned(out)
}

/// `text` bounded to [`MAX_REASON_BYTES`]: what every dead-letter reason
/// and `x-death-reason` header goes through.
pub fn reason(text: &str) -> Cow<'_, str> {
    truncate(text, MAX_REASON_BYTES)
}

/// [`reason`] for an owned string, reusing it when it is short enough.
pub fn reason_owned(text: String) -> String {
    if text.len() <= MAX_REASON_BYTES {
        text
    } else {
        reason(&text).into_owned()
    }
}

/// A quoted, escaped preview of `value` (as `{:?}` shows a string) of at
/// most [`PREVIEW_BYTES`] of its text, with `…(<length> bytes)` when it was
/// cut: what an error message shows of an offending string.
pub fn preview(value: &str) -> String {
    if value.len() <= PREVIEW_BYTES {
        format!("{value:?}")
    } else {
        let cut = floor_char_boundary(value, PREVIEW_BYTES);
        format!("{:?}…({} bytes)", &value[..cut], value.len())
    }
}

/// At most [`PREVIEW_BYTES`] of what `value` displays, with
/// `…(<length> bytes)` when it was cut; the text beyond the bound is
/// counted, never kept. For values such as a JSON value whose display may
/// be large.
pub fn preview_display(value: &dyn fmt::Display) -> String {
    let mut writer = Capped {
        kept: String::new(),
        total: 0,
        cap: PREVIEW_BYTES,
    };
    // `Capped` never fails; a Display that does leaves what it wrote.
    let _ = write!(writer, "{value}");
    if writer.total <= writer.cap {
        writer.kept
    } else {
        format!("{}…({} bytes)", writer.kept, writer.total)
    }
}

/// Keeps the first `cap` bytes written (whole characters only) and counts
/// the rest.
struct Capped {
    kept: String,
    total: usize,
    cap: usize,
}

impl fmt::Write for Capped {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.total += s.len();
        let room = self.cap.saturating_sub(self.kept.len());
        if room > 0 {
            let cut = floor_char_boundary(s, room);
            self.kept.push_str(&s[..cut]);
            // Once a character did not fit, nothing after it may.
            if cut < s.len() {
                self.cap = self.kept.len();
            }
        }
        Ok(())
    }
}

/// The largest index ≤ `at` that is a character boundary of `s`.
fn floor_char_boundary(s: &str, at: usize) -> usize {
    if at >= s.len() {
        return s.len();
    }
    let mut i = at;
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_text_is_kept_as_is() {
        assert!(matches!(reason("bad qty"), Cow::Borrowed("bad qty")));
        let exact = "x".repeat(MAX_REASON_BYTES);
        assert_eq!(reason(&exact), exact.as_str());
    }

    #[test]
    fn long_text_is_cut_with_its_length() {
        let long = "a".repeat(204_800);
        let r = reason(&long);
        assert!(r.len() <= MAX_REASON_BYTES, "{}", r.len());
        assert!(r.ends_with("…(204800 bytes)"), "{r}");
        assert!(r.starts_with("aaaa"));
    }

    #[test]
    fn cuts_on_a_character_boundary() {
        // 3-byte characters: no cut may split one.
        let long = "€".repeat(1000);
        for max in [0, 1, 2, 5, 17, 18, 19, 20, 64, 1024] {
            let t = truncate(&long, max);
            assert!(t.len() <= max, "{max}: {}", t.len());
        }
        let r = reason(&long);
        assert!(r.ends_with("…(3000 bytes)"));
        assert!(
            r.trim_end_matches("…(3000 bytes)")
                .chars()
                .all(|c| c == '€')
        );
    }

    #[test]
    fn previews_are_quoted_and_bounded() {
        assert_eq!(preview("ORD-1"), "\"ORD-1\"");
        let p = preview(&"z".repeat(10_000));
        assert!(p.starts_with("\"zzz"), "{p}");
        assert!(p.ends_with("\"…(10000 bytes)"), "{p}");
        assert!(p.len() < PREVIEW_BYTES + 32);
        // Escapes do not let control characters grow it without bound.
        let p = preview(&"\u{1}".repeat(10_000));
        assert!(p.len() < 16 * PREVIEW_BYTES, "{}", p.len());
    }

    #[test]
    fn display_previews_count_what_they_drop() {
        let v = serde_json::json!({"big": "y".repeat(5000)});
        let p = preview_display(&v);
        assert!(p.starts_with("{\"big\":\"yyy"), "{p}");
        assert!(p.ends_with("…(5010 bytes)"), "{p}");
        assert_eq!(preview_display(&7), "7");
        let p = preview_display(&"é".repeat(100));
        assert!(p.len() <= PREVIEW_BYTES + 20, "{p}");
        assert!(p.ends_with("…(200 bytes)"), "{p}");
    }
}
