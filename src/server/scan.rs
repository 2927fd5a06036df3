//! A look at each HTTP/1.1 request head as it arrives, for what hyper
//! resolves silently: `content-length` and `transfer-encoding` together.
//!
//! Why: hyper follows RFC 9112 and lets `transfer-encoding` win, dropping
//! the length before weir sees the request; but a front proxy that reads
//! the length instead would frame the same bytes differently (request
//! smuggling). Envoy refuses such a request with 400, and so does weir:
//! this scanner notes, per head, whether both names appear at the start of a
//! header line, and the proxy answers 400 before routing. Only the first 18
//! bytes of each line are looked at (`memchr` finds the line ends); an
//! HTTP/2 connection (its preface) turns the scanner off.

/// The scanner of one connection's request heads.
#[derive(Debug, Default)]
pub struct HeadScan {
    state: State,
    /// The first bytes of the current line, lower-cased.
    prefix: [u8; PREFIX],
    prefix_len: usize,
    /// Bytes in the current line so far (a bare `\r` does not count).
    line_len: usize,
    /// Lines seen in this head (blank lines before the request line are
    /// skipped, as RFC 9112 allows).
    lines: usize,
    seen: u8,
}

const PREFIX: usize = 18;
const LENGTH: u8 = 1;
const CHUNKED: u8 = 2;

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading a head.
    #[default]
    Head,
    /// The head ended; body bytes (or a pipelined head) until weir says a
    /// new head begins.
    Body,
    /// HTTP/2: nothing to look at.
    Off,
}

/// What a chunk of bytes showed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// Nothing to report (yet).
    Nothing,
    /// A head ended; `ambiguous` when it named both a length and a coding.
    HeadEnd { ambiguous: bool },
}

impl HeadScan {
    /// A new head begins with the next byte read.
    pub fn expect_head(&mut self) {
        if self.state != State::Off {
            *self = Self::default();
        }
    }

    pub fn is_reading_head(&self) -> bool {
        self.state == State::Head
    }

    /// Looks at bytes read from the client.
    pub fn feed(&mut self, mut bytes: &[u8]) -> Seen {
        while self.state == State::Head && !bytes.is_empty() {
            let (line, rest, ended) = match memchr::memchr(b'\n', bytes) {
                Some(at) => (&bytes[..at], &bytes[at + 1..], true),
                None => (bytes, &[][..], false),
            };
            bytes = rest;
            let take = line.len().min(PREFIX - self.prefix_len);
            for (slot, b) in self.prefix[self.prefix_len..].iter_mut().zip(&line[..take]) {
                *slot = b.to_ascii_lowercase();
            }
            self.prefix_len += take;
            self.line_len += line.len();
            if !ended {
                break;
            }
            if let Some(seen) = self.end_line() {
                return seen;
            }
        }
        Seen::Nothing
    }

    fn end_line(&mut self) -> Option<Seen> {
        let line = &self.prefix[..self.prefix_len];
        let blank = self.line_len == 0 || (self.line_len == 1 && line == b"\r");
        let first = self.lines == 0;
        self.prefix_len = 0;
        self.line_len = 0;
        if blank {
            if first {
                return None;
            }
            self.state = State::Body;
            return Some(Seen::HeadEnd {
                ambiguous: self.seen == LENGTH | CHUNKED,
            });
        }
        if first && line.starts_with(b"pri * http/2.0") {
            self.state = State::Off;
            return None;
        }
        self.lines += 1;
        if line.starts_with(b"content-length:") {
            self.seen |= LENGTH;
        } else if line.starts_with(b"transfer-encoding:") {
            self.seen |= CHUNKED;
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn scan(bytes: &[u8]) -> Seen {
        HeadScan::default().feed(bytes)
    }

    #[test]
    fn a_length_and_a_coding_together_are_ambiguous() {
        let both = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
        assert_eq!(scan(both), Seen::HeadEnd { ambiguous: true });
        let upper = b"POST / HTTP/1.1\r\nTRANSFER-ENCODING: chunked\r\nCONTENT-LENGTH: 5\r\n\r\n";
        assert_eq!(scan(upper), Seen::HeadEnd { ambiguous: true });
        let bare_lf = b"POST / HTTP/1.1\ncontent-length: 5\ntransfer-encoding: chunked\n\n";
        assert_eq!(scan(bare_lf), Seen::HeadEnd { ambiguous: true });
    }

    #[test]
    fn one_or_the_other_is_fine() {
        for head in [
            &b"POST / HTTP/1.1\r\ncontent-length: 5\r\n\r\nhello"[..],
            b"POST / HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n",
            b"GET / HTTP/1.1\r\nhost: x\r\nx-content-length: 5\r\nx: transfer-encoding: chunked\r\n\r\n",
            b"\r\n\r\nGET / HTTP/1.1\r\nhost: x\r\n\r\n",
        ] {
            assert_eq!(scan(head), Seen::HeadEnd { ambiguous: false }, "{head:?}");
        }
    }

    #[test]
    fn the_body_is_not_read_as_a_head() {
        let mut s = HeadScan::default();
        let head = b"POST / HTTP/1.1\r\ncontent-length: 40\r\n\r\n";
        assert_eq!(s.feed(head), Seen::HeadEnd { ambiguous: false });
        assert_eq!(
            s.feed(b"\r\ntransfer-encoding: chunked\r\n\r\n"),
            Seen::Nothing
        );
        s.expect_head();
        assert!(s.is_reading_head());
    }

    #[test]
    fn http2_turns_it_off() {
        let mut s = HeadScan::default();
        assert_eq!(s.feed(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"), Seen::Nothing);
        s.expect_head();
        assert!(!s.is_reading_head());
    }

    proptest! {
        /// However the head is cut into reads, the answer is the same.
        #[test]
        fn any_split_gives_the_same_answer(cuts in prop::collection::vec(0usize..120, 0..6), both in any::<bool>()) {
            let head = if both {
                &b"POST /v1 HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"[..]
            } else {
                &b"POST /v1 HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nX-Transfer-Encoding: chunked\r\n\r\n"[..]
            };
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c % head.len()).collect();
            cuts.sort_unstable();
            let mut s = HeadScan::default();
            let mut last = Seen::Nothing;
            let mut at = 0;
            for cut in cuts.into_iter().chain([head.len()]) {
                let seen = s.feed(&head[at..cut.max(at)]);
                if seen != Seen::Nothing { last = seen; }
                at = cut.max(at);
            }
            prop_assert_eq!(last, Seen::HeadEnd { ambiguous: both });
        }
    }
}
