//! The open-file limit. Every in-flight stream holds a socket, so a load generator needs the
//! soft limit raised to the hard one; what is left decides how many streams fit.

use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};

/// The soft and hard open-file limits (None: unlimited).
pub fn nofile_limit() -> (Option<u64>, Option<u64>) {
    let cur = getrlimit(Resource::Nofile);
    (cur.current, cur.maximum)
}

/// Raises the soft open-file limit to the hard limit; returns the soft limit now in force
/// (None: unlimited). A refusal leaves the limit as it was.
pub fn raise_nofile_limit() -> Option<u64> {
    let cur = getrlimit(Resource::Nofile);
    if cur.current == cur.maximum {
        return cur.current;
    }
    let new = Rlimit {
        current: cur.maximum,
        maximum: cur.maximum,
    };
    match setrlimit(Resource::Nofile, new) {
        Ok(()) => cur.maximum,
        Err(_) => cur.current,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn raising_reaches_the_hard_limit() {
        let soft = super::raise_nofile_limit();
        let (now, hard) = super::nofile_limit();
        assert_eq!(soft, now);
        assert_eq!(now, hard);
    }
}
