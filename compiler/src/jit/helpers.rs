//! Functions the generated code calls for text and the one float operation
//! Cranelift has no instruction for. Everything else is inline.
//!
//! Every helper takes texts as (pointer, length) pairs that the generated
//! code read from a validated block, from the bundle's constants, or from
//! the scratch arena; a length of zero may come with any pointer, so no
//! helper builds a slice from a pointer it has not checked.

use crate::interp::like;
use std::collections::HashSet;

/// A text as the generated code passes it around.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct TextRef {
    pub ptr: *const u8,
    pub len: u64,
}

/// # Safety
/// `ptr` must point to `len` readable bytes when `len > 0`.
unsafe fn bytes<'a>(ptr: *const u8, len: u64) -> &'a [u8] {
    if len == 0 {
        &[]
    } else {
        std::slice::from_raw_parts(ptr, len as usize)
    }
}

/// # Safety
/// As [`bytes`], and the bytes are UTF-8 (every text source guarantees it).
unsafe fn text<'a>(ptr: *const u8, len: u64) -> &'a str {
    std::str::from_utf8_unchecked(bytes(ptr, len))
}

/// Byte equality tuned for the short texts records hold (codes, names):
/// up to 16 bytes in two overlapping word compares, no call to `memcmp`.
#[inline]
fn bytes_eq(a: &[u8], b: &[u8]) -> bool {
    let n = a.len();
    if n != b.len() {
        return false;
    }
    let word = |s: &[u8], at: usize| u64::from_le_bytes(s[at..at + 8].try_into().unwrap());
    let half = |s: &[u8], at: usize| u32::from_le_bytes(s[at..at + 4].try_into().unwrap());
    match n {
        0 => true,
        1..=3 => a.iter().zip(b).all(|(x, y)| x == y),
        4..=7 => half(a, 0) == half(b, 0) && half(a, n - 4) == half(b, n - 4),
        8..=16 => word(a, 0) == word(b, 0) && word(a, n - 8) == word(b, n - 8),
        _ => a == b,
    }
}

pub extern "C" fn text_eq(a: *const u8, a_len: u64, b: *const u8, b_len: u64) -> i8 {
    // SAFETY: the generated code passes texts as the module comment says.
    unsafe { i8::from(bytes_eq(bytes(a, a_len), bytes(b, b_len))) }
}

/// -1, 0 or 1, comparing bytes (the interpreter's order).
pub extern "C" fn text_cmp(a: *const u8, a_len: u64, b: *const u8, b_len: u64) -> i8 {
    // SAFETY: as above.
    unsafe { bytes(a, a_len).cmp(bytes(b, b_len)) as i8 }
}

/// Characters, not bytes: counts the bytes that start a character.
pub extern "C" fn text_length(ptr: *const u8, len: u64) -> i64 {
    // SAFETY: as above.
    let b = unsafe { bytes(ptr, len) };
    b.iter().filter(|&&c| (c as i8) >= -0x40).count() as i64
}

pub extern "C" fn float_rem(a: f64, b: f64) -> f64 {
    a % b
}

/// A `like` pattern, prepared once per compiled step: the common shapes
/// (`abc`, `abc%`, `%abc`, `%abc%`) are byte searches; anything with `_` or
/// more `%` goes to the interpreter's matcher.
#[derive(Debug)]
pub enum LikeMatcher {
    Exact(String),
    Prefix(String),
    Suffix(String),
    Contains(String),
    General(String),
}

impl LikeMatcher {
    pub fn new(pattern: &str) -> LikeMatcher {
        if pattern.contains('_') {
            return LikeMatcher::General(pattern.to_string());
        }
        let inner = pattern.trim_matches('%');
        if inner.contains('%') {
            return LikeMatcher::General(pattern.to_string());
        }
        let (starts, ends) = (pattern.starts_with('%'), pattern.ends_with('%'));
        let inner = inner.to_string();
        match (starts, ends) {
            _ if inner.is_empty() && (starts || ends) => LikeMatcher::Contains(inner),
            (false, false) => LikeMatcher::Exact(inner),
            (false, true) => LikeMatcher::Prefix(inner),
            (true, false) => LikeMatcher::Suffix(inner),
            (true, true) => LikeMatcher::Contains(inner),
        }
    }

    pub fn matches(&self, s: &str) -> bool {
        let t = s.as_bytes();
        match self {
            LikeMatcher::Exact(p) => bytes_eq(t, p.as_bytes()),
            LikeMatcher::Prefix(p) => t.len() >= p.len() && bytes_eq(&t[..p.len()], p.as_bytes()),
            LikeMatcher::Suffix(p) => {
                t.len() >= p.len() && bytes_eq(&t[t.len() - p.len()..], p.as_bytes())
            }
            LikeMatcher::Contains(p) => contains(t, p.as_bytes()),
            LikeMatcher::General(p) => like(s, p),
        }
    }
}

/// Whether `needle` occurs in `haystack`: a scan for the first byte, then
/// a compare (no searcher to build per call, which dominates on short
/// texts).
fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    let Some((&first, _)) = needle.split_first() else {
        return true;
    };
    if haystack.len() < needle.len() {
        return false;
    }
    let last_start = haystack.len() - needle.len();
    haystack[..=last_start]
        .iter()
        .enumerate()
        .any(|(i, &c)| c == first && bytes_eq(&haystack[i..i + needle.len()], needle))
}

impl LikeMatcher {
    /// `lower(s) like pattern` for an ASCII `s`, lowering as it compares.
    fn matches_ascii_lowered(&self, s: &[u8]) -> bool {
        let eq = |t: &[u8], p: &str| {
            t.len() == p.len()
                && t.iter()
                    .zip(p.bytes())
                    .all(|(a, b)| a.to_ascii_lowercase() == b)
        };
        match self {
            LikeMatcher::Exact(p) => eq(s, p),
            LikeMatcher::Prefix(p) => s.len() >= p.len() && eq(&s[..p.len()], p),
            LikeMatcher::Suffix(p) => s.len() >= p.len() && eq(&s[s.len() - p.len()..], p),
            LikeMatcher::Contains(p) => p.is_empty() || s.windows(p.len()).any(|w| eq(w, p)),
            LikeMatcher::General(p) => like(&String::from_utf8_lossy(s).to_ascii_lowercase(), p),
        }
    }
}

/// `lower(text) like pattern` in one call: ASCII texts (the common case)
/// are lowered as they are compared, others through the scratch.
pub extern "C" fn text_like_lower(
    matcher: *const LikeMatcher,
    scratch: *mut Scratch,
    ptr: *const u8,
    len: u64,
) -> i8 {
    // SAFETY: as for `text_like` and `text_lower`.
    unsafe {
        let s = text(ptr, len);
        // Lowering is per character, and an ASCII byte is a character of
        // its own that lowers to one ASCII byte: when the bytes a prefix or
        // suffix pattern looks at are ASCII, they decide alone.
        let b = s.as_bytes();
        match &*matcher {
            LikeMatcher::Prefix(p) if b.len() >= p.len() && b[..p.len()].is_ascii() => {
                return i8::from((*matcher).matches_ascii_lowered(&b[..p.len()]))
            }
            LikeMatcher::Suffix(p) if b.len() >= p.len() && b[b.len() - p.len()..].is_ascii() => {
                return i8::from((*matcher).matches_ascii_lowered(&b[b.len() - p.len()..]))
            }
            _ => {}
        }
        if s.is_ascii() {
            return i8::from((*matcher).matches_ascii_lowered(s.as_bytes()));
        }
        match &*matcher {
            // Lowered a character at a time, stopping at the first that
            // differs (a final sigma needs its context: not here).
            LikeMatcher::Prefix(p) if !s.contains('Σ') => {
                return i8::from(lowered_starts_with(s, p.as_bytes(), false))
            }
            LikeMatcher::Exact(p) if !s.contains('Σ') => {
                return i8::from(lowered_starts_with(s, p.as_bytes(), true))
            }
            _ => {}
        }
        let lowered = (*scratch).map_case(s, false);
        i8::from((*matcher).matches(text(lowered.ptr, lowered.len)))
    }
}

/// Whether `s` lowered starts with (`exact`: is) `p`.
fn lowered_starts_with(s: &str, p: &[u8], exact: bool) -> bool {
    let mut at = 0;
    let mut buf = [0u8; 4];
    for c in s.chars().flat_map(char::to_lowercase) {
        if at == p.len() {
            return !exact;
        }
        let e = c.encode_utf8(&mut buf).as_bytes();
        if p.len() - at < e.len() || p[at..at + e.len()] != *e {
            return false;
        }
        at += e.len();
    }
    at == p.len()
}

pub extern "C" fn text_like(matcher: *const LikeMatcher, ptr: *const u8, len: u64) -> i8 {
    // SAFETY: `matcher` is owned by the compiled step that calls this; the
    // text is as the module comment says.
    unsafe { i8::from((*matcher).matches(text(ptr, len))) }
}

/// The constant texts of an `in` list: a scan of the few of the same
/// length for short lists, a hash lookup for long ones.
#[derive(Debug)]
pub enum TextSet {
    Few(Vec<Box<[u8]>>),
    Many(HashSet<Box<[u8]>>),
}

/// Up to this many items, a scan (length first) beats hashing the text.
const TEXT_SET_SCAN_MAX: usize = 16;

impl TextSet {
    pub fn new(items: Vec<Box<[u8]>>) -> TextSet {
        if items.len() <= TEXT_SET_SCAN_MAX {
            TextSet::Few(items)
        } else {
            TextSet::Many(items.into_iter().collect())
        }
    }

    pub fn contains(&self, text: &[u8]) -> bool {
        match self {
            TextSet::Few(items) => items.iter().any(|item| bytes_eq(item, text)),
            TextSet::Many(items) => items.contains(text),
        }
    }
}

pub extern "C" fn text_in_set(set: *const TextSet, ptr: *const u8, len: u64) -> i8 {
    // SAFETY: as for `text_like`.
    unsafe { i8::from((*set).contains(bytes(ptr, len))) }
}

/// Memory for texts made during one evaluation (`lower`, `upper`): chunks
/// that never move once allocated, so every text handed out stays valid
/// until the evaluation (one block) ends and the scratch is dropped.
/// Allocates nothing until the first text is stored.
#[derive(Default)]
pub struct Scratch {
    chunks: Vec<Vec<u8>>,
}

const SCRATCH_CHUNK_BYTES: usize = 64 * 1024;

impl Scratch {
    /// Copies `s` in, lets `map` change the copy in place (keeping it
    /// UTF-8 of the same length), and returns where it now lives.
    fn store(&mut self, s: &str, map: impl FnOnce(&mut [u8])) -> TextRef {
        let chunk = self.room(s.len());
        let start = chunk.len();
        chunk.extend_from_slice(s.as_bytes());
        let stored = &mut chunk[start..];
        map(stored);
        TextRef {
            ptr: stored.as_ptr(),
            len: s.len() as u64,
        }
    }

    /// Room for `n` more bytes in the last chunk, which then does not move.
    fn room(&mut self, n: usize) -> &mut Vec<u8> {
        let fits = self
            .chunks
            .last()
            .is_some_and(|c| c.capacity() - c.len() >= n);
        if !fits {
            self.chunks
                .push(Vec::with_capacity(n.max(SCRATCH_CHUNK_BYTES)));
        }
        self.chunks
            .last_mut()
            .expect("a chunk with room was ensured")
    }

    fn map_case(&mut self, s: &str, upper: bool) -> TextRef {
        if !s.is_ascii() {
            // Only lowercasing a capital sigma depends on its neighbours
            // (a final sigma): leave that to the standard library, which is
            // what the interpreter calls.
            if !upper && s.contains('Σ') {
                return self.store(&s.to_lowercase(), |_| {});
            }
            // A character maps to at most three times its UTF-8 length.
            let chunk = self.room(3 * s.len());
            let start = chunk.len();
            let mut buf = [0u8; 4];
            for c in s.chars() {
                if upper {
                    for m in c.to_uppercase() {
                        chunk.extend_from_slice(m.encode_utf8(&mut buf).as_bytes());
                    }
                } else {
                    for m in c.to_lowercase() {
                        chunk.extend_from_slice(m.encode_utf8(&mut buf).as_bytes());
                    }
                }
            }
            return TextRef {
                ptr: chunk[start..].as_ptr(),
                len: (chunk.len() - start) as u64,
            };
        }
        self.store(s, |copy| {
            if upper {
                copy.make_ascii_uppercase()
            } else {
                copy.make_ascii_lowercase()
            }
        })
    }
}

pub extern "C" fn text_lower(scratch: *mut Scratch, ptr: *const u8, len: u64, out: *mut TextRef) {
    // SAFETY: `scratch` is the evaluation's own, used by one thread; `out`
    // is a stack slot of the generated code.
    unsafe { *out = (*scratch).map_case(text(ptr, len), false) }
}

pub extern "C" fn text_upper(scratch: *mut Scratch, ptr: *const u8, len: u64, out: *mut TextRef) {
    // SAFETY: as for `text_lower`.
    unsafe { *out = (*scratch).map_case(text(ptr, len), true) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn like_shapes_agree_with_the_general_matcher() {
        let patterns = [
            "", "%", "%%", "a", "a%", "%a", "%a%", "ab%c", "a_", "%é%", "é", "ab%", "%ka", "k%",
            "%σ", "%c",
        ];
        let texts = ["", "a", "ba", "ab", "abc", "é", "xéy", "a%"];
        for p in patterns {
            let m = LikeMatcher::new(p);
            for t in texts {
                assert_eq!(m.matches(t), like(t, p), "{t:?} like {p:?} ({m:?})");
            }
            let mut scratch = Scratch::default();
            let texts = [
                "",
                "A",
                "Ab",
                "aB%",
                "ÉA",
                "xAbC",
                "ÉAb",
                "AÉ",
                "İa",
                "Éé",
                "AΣA",
                "AbΣ",
                "\u{212A}a",
                "a\u{212A}",
                "Ab\u{130}c",
            ];
            for t in texts {
                let fused = text_like_lower(&m, &mut scratch, t.as_ptr(), t.len() as u64);
                assert_eq!(
                    fused == 1,
                    like(&t.to_lowercase(), p),
                    "lower({t:?}) like {p:?}"
                );
            }
        }
    }

    #[test]
    fn byte_equality_and_search_at_every_length() {
        let text: Vec<u8> = (0..40u8).map(|i| b'a' + i % 3).collect();
        for n in 0..text.len() {
            for m in 0..text.len() {
                let (a, b) = (&text[..n], &text[text.len() - m..]);
                assert_eq!(bytes_eq(a, b), a == b, "{n} {m}");
                let naive = b.is_empty() || a.windows(b.len()).any(|w| w == b);
                assert_eq!(contains(a, b), naive, "{n} {m}");
            }
        }
        let mut other = text.clone();
        other[20] = b'z';
        assert!(!bytes_eq(&text, &other));
        let set = TextSet::new(vec![b"PT".to_vec().into(), b"ES".to_vec().into()]);
        assert!(set.contains(b"ES") && !set.contains(b"E") && !set.contains(b"DE"));
        let many: Vec<Box<[u8]>> = (0..40)
            .map(|i| format!("c{i}").into_bytes().into())
            .collect();
        let set = TextSet::new(many);
        assert!(set.contains(b"c39") && !set.contains(b"c40"));
    }

    #[test]
    fn scratch_texts_stay_put_while_it_grows() {
        let mut scratch = Scratch::default();
        let long = "X".repeat(SCRATCH_CHUNK_BYTES - 3);
        let a = scratch.map_case("HeLLo", false);
        let b = scratch.map_case(&long, false);
        let c = scratch.map_case("Straße", true);
        let d = scratch.map_case("ΌΣΟΣ İx ﬃ", false);
        let e = scratch.map_case("ﬃ ΐ ß", true);
        // SAFETY: the scratch is alive and was not reset.
        unsafe {
            assert_eq!(text(a.ptr, a.len), "hello");
            assert_eq!(text(b.ptr, b.len), "x".repeat(SCRATCH_CHUNK_BYTES - 3));
            assert_eq!(text(c.ptr, c.len), "STRASSE");
            assert_eq!(text(d.ptr, d.len), "ΌΣΟΣ İx ﬃ".to_lowercase());
            assert_eq!(text(e.ptr, e.len), "ﬃ ΐ ß".to_uppercase());
        }
        assert_eq!(text_length("Straße".as_ptr(), 7), 6);
        assert_eq!(text_length(std::ptr::null(), 0), 0);
    }
}
