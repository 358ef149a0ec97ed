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

pub extern "C" fn text_eq(a: *const u8, a_len: u64, b: *const u8, b_len: u64) -> i8 {
    // SAFETY: the generated code passes texts as the module comment says.
    unsafe { i8::from(bytes(a, a_len) == bytes(b, b_len)) }
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
        match self {
            LikeMatcher::Exact(p) => s == p,
            LikeMatcher::Prefix(p) => s.starts_with(p.as_str()),
            LikeMatcher::Suffix(p) => s.ends_with(p.as_str()),
            LikeMatcher::Contains(p) => s.contains(p.as_str()),
            LikeMatcher::General(p) => like(s, p),
        }
    }
}

pub extern "C" fn text_like(matcher: *const LikeMatcher, ptr: *const u8, len: u64) -> i8 {
    // SAFETY: `matcher` is owned by the compiled step that calls this; the
    // text is as the module comment says.
    unsafe { i8::from((*matcher).matches(text(ptr, len))) }
}

/// The constant texts of an `in` list, for one lookup instead of a
/// comparison per element.
pub type TextSet = HashSet<Box<[u8]>>;

pub extern "C" fn text_in_set(set: *const TextSet, ptr: *const u8, len: u64) -> i8 {
    // SAFETY: as for `text_like`.
    unsafe { i8::from((*set).contains(bytes(ptr, len))) }
}

/// Memory for texts made during one evaluation (`lower`, `upper`): chunks
/// that never move once allocated, so every text handed out stays valid
/// until the evaluation (one block) ends and the scratch is dropped.
pub struct Scratch {
    chunks: Vec<Vec<u8>>,
}

const SCRATCH_CHUNK_BYTES: usize = 64 * 1024;

impl Default for Scratch {
    fn default() -> Self {
        Scratch {
            chunks: vec![Vec::with_capacity(SCRATCH_CHUNK_BYTES)],
        }
    }
}

impl Scratch {
    /// Copies `s` in and returns where it now lives.
    fn store(&mut self, s: &str) -> TextRef {
        let last = self.chunks.last_mut().expect("scratch has a chunk");
        if last.capacity() - last.len() < s.len() {
            self.chunks
                .push(Vec::with_capacity(s.len().max(SCRATCH_CHUNK_BYTES)));
        }
        let chunk = self.chunks.last_mut().expect("scratch has a chunk");
        let start = chunk.len();
        // Within capacity: the chunk's buffer does not move.
        chunk.extend_from_slice(s.as_bytes());
        TextRef {
            ptr: chunk[start..].as_ptr(),
            len: s.len() as u64,
        }
    }

    fn map_case(&mut self, s: &str, upper: bool) -> TextRef {
        if s.is_ascii() {
            let last = self.chunks.last_mut().expect("scratch has a chunk");
            if last.capacity() - last.len() < s.len() {
                self.chunks
                    .push(Vec::with_capacity(s.len().max(SCRATCH_CHUNK_BYTES)));
            }
            let chunk = self.chunks.last_mut().expect("scratch has a chunk");
            let start = chunk.len();
            chunk.extend(s.bytes().map(|c| {
                if upper {
                    c.to_ascii_uppercase()
                } else {
                    c.to_ascii_lowercase()
                }
            }));
            return TextRef {
                ptr: chunk[start..].as_ptr(),
                len: s.len() as u64,
            };
        }
        let mapped = if upper {
            s.to_uppercase()
        } else {
            s.to_lowercase()
        };
        self.store(&mapped)
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
            "", "%", "%%", "a", "a%", "%a", "%a%", "ab%c", "a_", "%é%", "é",
        ];
        let texts = ["", "a", "ba", "ab", "abc", "é", "xéy", "a%"];
        for p in patterns {
            let m = LikeMatcher::new(p);
            for t in texts {
                assert_eq!(m.matches(t), like(t, p), "{t:?} like {p:?} ({m:?})");
            }
        }
    }

    #[test]
    fn scratch_texts_stay_put_while_it_grows() {
        let mut scratch = Scratch::default();
        let long = "X".repeat(SCRATCH_CHUNK_BYTES - 3);
        let a = scratch.map_case("HeLLo", false);
        let b = scratch.map_case(&long, false);
        let c = scratch.map_case("Straße", true);
        // SAFETY: the scratch is alive and was not reset.
        unsafe {
            assert_eq!(text(a.ptr, a.len), "hello");
            assert_eq!(text(b.ptr, b.len), "x".repeat(SCRATCH_CHUNK_BYTES - 3));
            assert_eq!(text(c.ptr, c.len), "STRASSE");
        }
        assert_eq!(text_length("Straße".as_ptr(), 7), 6);
        assert_eq!(text_length(std::ptr::null(), 0), 0);
    }
}
