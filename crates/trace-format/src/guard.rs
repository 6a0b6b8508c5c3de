//! Corrupt input is an error, never a crash. The Parquet and Arrow decoders (and polars above
//! them) can panic on a file whose pages were damaged in ways their checks do not catch (found
//! by tests/fuzz.rs: a few flipped bytes made arrow-buffer panic with "offset + len out of
//! bounds"). [`guarded`] runs one decoding step under `catch_unwind` and turns a panic into
//! [`Error::Corrupt`] naming the file; while it runs, the panic hook stays quiet, so the user
//! sees one error line and no backtrace. Quiet for every thread, not just the caller's: polars
//! decodes on its own executor threads and their panics reach the caller through it. (A
//! genuine bug panicking elsewhere during a guarded decode is silenced too; it still fails.)

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use std::sync::Once;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::{Error, Result};

/// Guarded decodes running now, in any thread.
static QUIET: AtomicUsize = AtomicUsize::new(0);

static HOOK: Once = Once::new();

/// Installs (once) a panic hook that defers to the previous one except inside [`guarded`].
fn install_hook() {
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if QUIET.load(Ordering::SeqCst) == 0 {
                previous(info);
            }
        }));
    });
}

/// Runs `f`, one step of decoding `path`; a panic inside it becomes [`Error::Corrupt`].
pub fn guarded<T>(path: &Path, f: impl FnOnce() -> Result<T>) -> Result<T> {
    install_hook();
    QUIET.fetch_add(1, Ordering::SeqCst);
    let out = catch_unwind(AssertUnwindSafe(f));
    QUIET.fetch_sub(1, Ordering::SeqCst);
    match out {
        Ok(r) => r,
        Err(payload) => {
            let reason = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "the decoder failed".into());
            Err(Error::Corrupt {
                path: path.to_path_buf(),
                reason,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_is_an_error_naming_the_file_and_the_rest_is_unchanged() {
        let p = Path::new("x.parquet");
        let e = guarded::<()>(p, || panic!("offset + len out of bounds")).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("x.parquet") && msg.contains("offset + len"),
            "{msg}"
        );
        assert_eq!(guarded(p, || Ok(7)).unwrap(), 7);
    }
}
