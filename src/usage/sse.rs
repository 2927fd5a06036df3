//! Why: a streamed answer reports its usage in one late event (the chat
//! `include_usage` chunk, the Responses API's `response.completed`), and weir
//! sits on the path of every byte of every stream. So this reads the stream
//! as it passes instead of holding it: it finds event boundaries in each
//! chunk, copies only the bytes of an event split across chunks (at most
//! [`MAX_EVENT`]), and parses an event's JSON only when it can matter: while
//! the model is not known yet, or when a `"usage"` key holds something other
//! than `null`.
//!
//! In strip mode it also removes the usage-only chat event that weir made the
//! upstream send by adding `stream_options.include_usage`, so the client sees
//! exactly the stream it asked for. Events are then forwarded whole, as
//! received, once complete.
//!
//! Per the SSE spec a line ends at `\r\n`, `\n` or `\r`; a blank line ends an
//! event; `data:` lines join with `\n`; `:` lines are comments; an event
//! still open when the stream ends is discarded (its bytes still reach the
//! client). A leading byte-order mark is not removed.

use std::sync::LazyLock;

use bytes::Bytes;
use memchr::memmem;

use crate::usage::json::Fields;
use crate::usage::Usage;

/// The largest event kept for parsing (and, in strip mode, held before
/// forwarding). A larger event is not parsed; in strip mode it is forwarded
/// unchanged.
pub const MAX_EVENT: usize = 1024 * 1024;

/// Events with data parsed to find the model before only usage events are.
const MODEL_TRIES: u8 = 8;

/// Capacity a buffer keeps once an event has gone through it.
const KEEP_CAPACITY: usize = 64 * 1024;

/// Token usage and model of one SSE stream, read incrementally.
#[derive(Debug, Default)]
pub struct SseUsage {
    strip: bool,
    /// Bytes of the current event from earlier chunks; in strip mode also
    /// the bytes held back from the client.
    held: Vec<u8>,
    /// The current event grew past [`MAX_EVENT`]: not kept until its end.
    oversized: bool,
    /// Some byte of the current line has been seen.
    mid_line: bool,
    /// The last byte seen was a `\r`: a `\n` next completes its line end.
    cr: bool,
    /// That `\r` ended an event: Some(whether the event was forwarded).
    cr_ended_event: Option<bool>,
    /// Data of an event with several `data:` lines, joined.
    joined: Vec<u8>,
    model: Option<String>,
    model_tries: u8,
    usage: Option<Usage>,
    stripped: bool,
}

impl SseUsage {
    /// `strip_usage_only`: remove usage-only chat events from the forwarded
    /// bytes.
    pub fn new(strip_usage_only: bool) -> Self {
        Self {
            strip: strip_usage_only,
            ..Self::default()
        }
    }

    /// Observes the next chunk. Pass-through mode: returns None, the caller
    /// forwards `chunk` untouched. Strip mode: returns the bytes to forward
    /// now: every complete event, as received, except usage-only ones; an
    /// incomplete event is held until it completes or outgrows
    /// [`MAX_EVENT`].
    pub fn feed(&mut self, chunk: &Bytes) -> Option<Bytes> {
        let mut out = Out {
            chunk,
            on: self.strip,
            span: None,
            copy: None,
        };
        if !chunk.is_empty() {
            self.scan(chunk, &mut out);
        }
        self.strip.then(|| out.into_bytes())
    }

    /// At the end of the stream: in strip mode, the held bytes of a trailing
    /// incomplete event, to forward unchanged. That event is not parsed.
    pub fn finish(&mut self) -> Option<Bytes> {
        self.oversized = false;
        self.mid_line = false;
        self.cr = false;
        self.cr_ended_event = None;
        let held = std::mem::take(&mut self.held);
        (self.strip && !held.is_empty()).then(|| Bytes::from(held))
    }

    /// The model from the first event that names one (chat chunk `model`,
    /// or Responses `response.model`).
    pub fn model(&self) -> Option<&str> {
        self.model.as_deref()
    }

    /// The usage reported, if any event carried it (the last one wins).
    pub fn usage(&self) -> Option<&Usage> {
        self.usage.as_ref()
    }

    /// Whether a usage-only event was removed (strip mode).
    pub fn stripped(&self) -> bool {
        self.stripped
    }

    fn scan(&mut self, c: &Bytes, out: &mut Out) {
        let (mut i, mut start) = (0, 0);
        if std::mem::take(&mut self.cr) && c.first() == Some(&b'\n') {
            i = 1;
            if let Some(forwarded) = self.cr_ended_event {
                start = 1;
                if forwarded {
                    out.range(0, 1);
                }
            }
        }
        self.cr_ended_event = None;
        while let Some(p) = find_eol(&c[i..]).map(|p| p + i) {
            let blank = !self.mid_line && p == i;
            self.mid_line = false;
            let mut end = p + 1;
            if c[p] == b'\r' {
                match c.get(end) {
                    Some(b'\n') => end += 1,
                    Some(_) => {}
                    None => self.cr = true,
                }
            }
            i = end;
            if blank {
                let forwarded = self.complete(c, start, p, end, out);
                if self.cr {
                    self.cr_ended_event = Some(forwarded);
                }
                start = end;
            }
        }
        if i < c.len() {
            self.mid_line = true;
        }
        self.incomplete(c, start, out);
    }

    /// The event in `c[start..end]` (after any held bytes) is complete; its
    /// size counts up to its blank line at `eol`. Returns whether it is kept.
    fn complete(&mut self, c: &[u8], start: usize, eol: usize, end: usize, out: &mut Out) -> bool {
        if std::mem::take(&mut self.oversized) {
            out.range(start, end);
            return true;
        }
        if self.held.len() + (eol + 1 - start) > MAX_EVENT {
            out.bytes(&self.held);
            out.range(start, end);
            clear(&mut self.held);
            return true;
        }
        if self.held.is_empty() {
            let keep = self.event(&c[start..end]);
            if keep {
                out.range(start, end);
            }
            return keep;
        }
        let mut event = std::mem::take(&mut self.held);
        append(&mut event, &c[start..end]);
        let keep = self.event(&event);
        if keep {
            out.bytes(&event);
        }
        clear(&mut event);
        self.held = event;
        keep
    }

    /// `c[start..]` belongs to an event that continues in the next chunk.
    fn incomplete(&mut self, c: &[u8], start: usize, out: &mut Out) {
        if start == c.len() {
            return;
        }
        if !self.oversized && self.held.len() + (c.len() - start) <= MAX_EVENT {
            append(&mut self.held, &c[start..]);
            return;
        }
        self.oversized = true;
        out.bytes(&self.held);
        out.range(start, c.len());
        clear(&mut self.held);
    }

    /// Reads one complete event (its bytes with its blank line); returns
    /// false if strip mode removes it.
    fn event(&mut self, event: &[u8]) -> bool {
        let want_model = self.model.is_none() && self.model_tries < MODEL_TRIES;
        if !want_model && !has_live_usage(event) {
            return true;
        }
        let mut joined = std::mem::take(&mut self.joined);
        let keep = match data_of(event, &mut joined) {
            Some(data) if !data.is_empty() && data != b"[DONE]" => {
                self.model_tries = self.model_tries.saturating_add(u8::from(want_model));
                self.data(data)
            }
            _ => true,
        };
        clear(&mut joined);
        self.joined = joined;
        keep
    }

    fn data(&mut self, data: &[u8]) -> bool {
        let Some(fields) = Fields::parse(data) else {
            return true;
        };
        if self.model.is_none() {
            self.model = fields.model.map(|m| m.into_owned());
        }
        if fields.usage.is_some() {
            self.usage = fields.usage;
        }
        let strip = self.strip && fields.usage_only;
        self.stripped |= strip;
        !strip
    }

    #[cfg(test)]
    fn held_capacity(&self) -> usize {
        self.held.capacity().max(self.held.len())
    }
}

/// Appends to a buffer of at most [`MAX_EVENT`] bytes (plus the `\n` of a
/// `\r\n` blank line) without growing its capacity past that.
fn append(buf: &mut Vec<u8>, bytes: &[u8]) {
    let need = buf.len() + bytes.len();
    if need > buf.capacity() {
        let cap = need.max(buf.capacity() * 2).min(need.max(MAX_EVENT));
        buf.reserve_exact(cap - buf.len());
    }
    buf.extend_from_slice(bytes);
}

/// Empties a buffer, letting go of the memory an unusually large event took.
fn clear(buf: &mut Vec<u8>) {
    buf.clear();
    if buf.capacity() > KEEP_CAPACITY {
        buf.shrink_to(KEEP_CAPACITY);
    }
}

/// The bytes one `feed` forwards: a slice of the chunk while they are one
/// contiguous run of it, a copy once they are not.
struct Out<'c> {
    chunk: &'c Bytes,
    on: bool,
    span: Option<(usize, usize)>,
    copy: Option<Vec<u8>>,
}

impl Out<'_> {
    fn range(&mut self, a: usize, b: usize) {
        if !self.on || a >= b {
            return;
        }
        match self.span {
            None if self.copy.is_none() => self.span = Some((a, b)),
            Some((s, e)) if e == a => self.span = Some((s, b)),
            _ => {
                let chunk = self.chunk;
                self.copied().extend_from_slice(&chunk[a..b]);
            }
        }
    }

    fn bytes(&mut self, bytes: &[u8]) {
        if self.on && !bytes.is_empty() {
            self.copied().extend_from_slice(bytes);
        }
    }

    fn copied(&mut self) -> &mut Vec<u8> {
        self.copy.get_or_insert_with(|| {
            let mut copy = Vec::with_capacity(self.chunk.len());
            if let Some((s, e)) = self.span.take() {
                copy.extend_from_slice(&self.chunk[s..e]);
            }
            copy
        })
    }

    fn into_bytes(self) -> Bytes {
        match (self.copy, self.span) {
            (Some(copy), _) => Bytes::from(copy),
            (None, Some((s, e))) => self.chunk.slice(s..e),
            (None, None) => Bytes::new(),
        }
    }
}

/// The data of a complete event: its `data:` values joined with `\n`
/// (borrowed from `event` when there is one), None if it has none.
fn data_of<'e>(event: &'e [u8], joined: &'e mut Vec<u8>) -> Option<&'e [u8]> {
    let (mut first, mut several) = (None, false);
    let mut rest = event;
    while !rest.is_empty() {
        let p = find_eol(rest).unwrap_or(rest.len());
        let line = &rest[..p];
        if line.is_empty() {
            break;
        }
        let crlf = rest.get(p) == Some(&b'\r') && rest.get(p + 1) == Some(&b'\n');
        rest = rest.get(p + 1 + usize::from(crlf)..).unwrap_or_default();
        let value = match line.iter().position(|&b| b == b':') {
            Some(0) => continue,
            Some(colon) if &line[..colon] == b"data" => &line[colon + 1..],
            None if line == b"data" => &[][..],
            _ => continue,
        };
        let value = value.strip_prefix(b" ").unwrap_or(value);
        match first {
            None => first = Some(value),
            Some(first) => {
                if !several {
                    joined.extend_from_slice(first);
                    several = true;
                }
                joined.push(b'\n');
                joined.extend_from_slice(value);
            }
        }
    }
    if several {
        Some(joined)
    } else {
        first
    }
}

/// Whether `event` may hold a `"usage"` key whose value is not `null`.
/// Never false when it does; true for some events that do not (a `usage`
/// broken over two `data:` lines, say), which parsing then sorts out.
fn has_live_usage(event: &[u8]) -> bool {
    static KEY: LazyLock<memmem::Finder<'static>> =
        LazyLock::new(|| memmem::Finder::new(b"\"usage\""));
    for at in KEY.find_iter(event) {
        let after = skip_blanks(&event[at + b"\"usage\"".len()..]);
        match after.first() {
            Some(b':') if skip_blanks(&after[1..]).starts_with(b"null") => {}
            Some(b',' | b'}' | b']') => {} // a string value, not a key
            _ => return true,
        }
    }
    false
}

fn skip_blanks(s: &[u8]) -> &[u8] {
    let n = s.iter().take_while(|b| matches!(b, b' ' | b'\t')).count();
    &s[n..]
}

/// The first `\n` or `\r` in `s`.
fn find_eol(s: &[u8]) -> Option<usize> {
    memchr::memchr2(b'\n', b'\r', s)
}

#[cfg(test)]
mod tests;
