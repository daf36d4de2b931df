//! The child → parent channel: one line per event on the child's stdout.
//!
//! Lines are written with one `write(2)` each on fd 1, unbuffered, so a line written
//! before the child dies by signal or abort is never lost in a buffer, and the lines
//! the allocator itself may write (`start`, `done`) are formatted in a stack buffer.
//! Every line starts with [`MAGIC`]: anything else on stdout (a library that prints) is
//! not an event and the parent ignores it.

use std::fs::File;
use std::io::Write;
use std::mem::ManuallyDrop;
use std::os::fd::FromRawFd;

/// Prefix of every event line (an ASCII record separator, then a tag).
pub const MAGIC: &str = "\x1eQF ";

/// One event from a child.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// Case `i` is about to run.
    Start(u64),
    /// Case `i` ran clean: its peak allocation in bytes, and whether the first parser
    /// accepted the input.
    Done(u64, usize, bool),
    /// Case `i` failed in a way the child survived (a panic, a refused allocation that
    /// was handled); the reason.
    Fail(u64, String),
    /// Case `i` asked for this many bytes over the budget (the child may abort next),
    /// from this qbench frame.
    Budget(u64, usize, Option<String>),
}

/// Writes all of `bytes` to fd 1 without allocating.
fn write_stdout(bytes: &[u8]) {
    // SAFETY: fd 1 is open for the child's whole life; ManuallyDrop never closes it.
    let mut out = ManuallyDrop::new(unsafe { File::from_raw_fd(1) });
    // Nothing to do if the parent is gone: it will not read the event anyway.
    let _ = out.write_all(bytes);
}

/// Appends the decimal digits of `v` to `buf` at `at`; returns the new end.
fn put_u64(buf: &mut [u8], mut at: usize, v: u64) -> usize {
    let mut digits = [0u8; 20];
    let mut n = 0;
    let mut v = v;
    loop {
        digits[n] = b'0' + (v % 10) as u8;
        n += 1;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    for d in digits[..n].iter().rev() {
        buf[at] = *d;
        at += 1;
    }
    at
}

/// Writes `MAGIC tag n1 n2 …\n` from a stack buffer (no allocation: safe inside the
/// allocator).
fn emit_nums(tag: &[u8], nums: &[u64]) {
    let mut buf = [0u8; 128];
    let mut at = 0;
    for part in [MAGIC.as_bytes(), tag] {
        buf[at..at + part.len()].copy_from_slice(part);
        at += part.len();
    }
    for &n in nums {
        buf[at] = b' ';
        at = put_u64(&mut buf, at + 1, n);
    }
    buf[at] = b'\n';
    write_stdout(&buf[..=at]);
}

pub fn emit_start(case: u64) {
    emit_nums(b"start", &[case]);
}

pub fn emit_done(case: u64, peak: usize, accepted: bool) {
    emit_nums(b"done", &[case, peak as u64, accepted as u64]);
}

/// Called from inside the allocator (with its check off, so formatting may allocate).
pub fn emit_budget(case: u64, size: usize, frame: Option<&str>) {
    let line = format!("{MAGIC}budget {case} {size} {}\n", frame.unwrap_or("-"));
    write_stdout(line.as_bytes());
}

/// A failure the child survived; `reason` is flattened to one line.
pub fn emit_fail(case: u64, reason: &str) {
    let line = format!("{MAGIC}fail {case} {}\n", one_line(reason));
    write_stdout(line.as_bytes());
}

/// `s` on one line (newlines and tabs become spaces), at most 300 characters.
pub fn one_line(s: &str) -> String {
    let flat: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(300)
        .collect();
    flat.trim().to_string()
}

/// Parses one line of a child's stdout; `None` for anything that is not an event.
pub fn parse(line: &str) -> Option<Event> {
    let rest = line.strip_prefix(MAGIC)?;
    let mut it = rest.splitn(3, ' ');
    let tag = it.next()?;
    let case: u64 = it.next()?.parse().ok()?;
    let arg = it.next().unwrap_or("");
    Some(match tag {
        "start" => Event::Start(case),
        "done" => {
            let (peak, accepted) = arg.trim().split_once(' ')?;
            Event::Done(case, peak.parse().ok()?, accepted == "1")
        }
        "budget" => {
            let (size, frame) = arg.trim().split_once(' ').unwrap_or((arg.trim(), "-"));
            let frame = (frame != "-").then(|| frame.to_string());
            Event::Budget(case, size.parse().ok()?, frame)
        }
        "fail" => Event::Fail(case, arg.trim_end().to_string()),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_format_without_allocating_and_parse_back() {
        let mut buf = [0u8; 32];
        let end = put_u64(&mut buf, 0, u64::MAX);
        assert_eq!(&buf[..end], u64::MAX.to_string().as_bytes());
        let end = put_u64(&mut buf, 0, 0);
        assert_eq!(&buf[..end], b"0");
        assert_eq!(
            parse(&format!(
                "{MAGIC}budget 7 70368744177664 models/src/tensor.rs:61:9"
            )),
            Some(Event::Budget(
                7,
                70368744177664,
                Some("models/src/tensor.rs:61:9".into())
            ))
        );
        assert_eq!(
            parse(&format!("{MAGIC}fail 3 panic: index out of bounds")),
            Some(Event::Fail(3, "panic: index out of bounds".into()))
        );
        assert_eq!(parse("hello"), None);
    }
}
