//! Opening an import's input: bounded and forgiving of what editors add. A file that is not
//! the text it claims to be (a newline-free 200 MB blob "CSV") must fail at once with a short
//! message, not be buffered whole; and a UTF-8 byte-order mark, which Windows editors put
//! before the first byte, is skipped.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::Path;

use crate::error::{Error, Result};

/// The longest line an importer reads: far above any real trace row (a ShareGPT conversation
/// is one JSON document, not a line, and is not read through this cap).
pub(crate) const MAX_LINE: usize = 16 << 20;

/// A reader that fails once a line runs past [`MAX_LINE`] bytes.
pub(crate) struct LineCap<R> {
    inner: R,
    since_newline: usize,
    line: u64,
}

impl<R: Read> Read for LineCap<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        for &b in &buf[..n] {
            if b == b'\n' {
                self.since_newline = 0;
                self.line += 1;
            } else {
                self.since_newline += 1;
                if self.since_newline > MAX_LINE {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!(
                            "line {} is longer than {} MiB: not a line-oriented text file of this format",
                            self.line + 1,
                            MAX_LINE >> 20
                        ),
                    ));
                }
            }
        }
        Ok(n)
    }
}

/// Opens `path` for line-oriented reading (CSV, JSON lines): buffered, line length capped, a
/// leading byte-order mark skipped.
pub(crate) fn open_lines(path: &Path) -> Result<BufReader<LineCap<File>>> {
    let file = File::open(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let mut r = BufReader::with_capacity(
        1 << 20,
        LineCap {
            inner: file,
            since_newline: 0,
            line: 0,
        },
    );
    skip_bom(&mut r).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(r)
}

/// Opens a whole-document JSON input (ShareGPT): buffered, a leading byte-order mark skipped.
pub(crate) fn open_document(path: &Path) -> Result<BufReader<File>> {
    let file = File::open(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let mut r = BufReader::with_capacity(1 << 20, file);
    skip_bom(&mut r).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(r)
}

fn skip_bom(r: &mut impl BufRead) -> io::Result<()> {
    if r.fill_buf()?.starts_with(b"\xEF\xBB\xBF") {
        r.consume(3);
    }
    Ok(())
}

/// `s` cut to `max` characters with an ellipsis, for echoing input back in an error.
pub(crate) fn excerpt(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}...", &s[..i]),
        None => s.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_past_the_cap_fails_naming_it_and_a_bom_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.csv");
        let mut big = b"\xEF\xBB\xBFa,b\n".to_vec();
        big.extend(std::iter::repeat_n(b'x', MAX_LINE + 10));
        std::fs::write(&p, &big).unwrap();
        let mut r = open_lines(&p).unwrap();
        let mut first = String::new();
        r.read_line(&mut first).unwrap();
        assert_eq!(first, "a,b\n");
        let mut rest = Vec::new();
        let e = r.read_to_end(&mut rest).unwrap_err();
        assert!(
            e.to_string().contains("line 2 is longer than 16 MiB"),
            "{e}"
        );
        assert!(
            rest.len() <= MAX_LINE + (1 << 20),
            "bounded: {}",
            rest.len()
        );
        assert_eq!(excerpt("abcdef", 3), "abc...");
        assert_eq!(excerpt("ab", 3), "ab");
    }
}
