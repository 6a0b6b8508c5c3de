//! The kernel's own estimate of its wall clock's error, as NTP (chrony, ntpd, systemd-timesyncd)
//! leaves it in the kernel: `adjtimex(2)` read-only. A sharded run records it per host, so the
//! offsets a merge rests on come with what each host believed about its clock.
//!
//! This is the workspace's one `unsafe` block: no maintained crate wraps `adjtimex` (rustix and
//! nix do not), and the call is a read-only query (modes = 0) into a zeroed plain-C struct.

/// What `adjtimex` says about this host's wall clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct KernelClock {
    /// False when the kernel marks the clock unsynchronised (STA_UNSYNC, or TIME_ERROR): no
    /// time daemon is disciplining it, and the error figures below mean nothing.
    pub synchronized: bool,
    /// The estimated error, µs (`esterror`).
    pub est_error_us: i64,
    /// The maximum error, µs (`maxerror`: grows by 500 ppm between daemon updates).
    pub max_error_us: i64,
    /// The remaining offset the kernel is slewing out, ns.
    pub offset_ns: i64,
}

/// Reads the kernel's clock state; `None` where the call is not available (not Linux, or a
/// sandbox that forbids it).
pub fn kernel_clock() -> Option<KernelClock> {
    imp::read()
}

#[cfg(target_os = "linux")]
mod imp {
    use super::KernelClock;

    #[allow(unsafe_code)]
    pub(super) fn read() -> Option<KernelClock> {
        // SAFETY: `timex` holds only integers and a timeval, so all-zero is a valid value, and
        // modes = 0 asks the kernel to fill it in without changing anything.
        let mut tx: libc::timex = unsafe { std::mem::zeroed() };
        let state = unsafe { libc::adjtimex(&mut tx) };
        if state < 0 {
            return None;
        }
        // STA_NANO means `offset` is in ns, else µs.
        let offset_ns = if tx.status & libc::STA_NANO != 0 {
            tx.offset as i64
        } else {
            tx.offset as i64 * 1_000
        };
        Some(KernelClock {
            synchronized: state != libc::TIME_ERROR && tx.status & libc::STA_UNSYNC == 0,
            est_error_us: tx.esterror as i64,
            max_error_us: tx.maxerror as i64,
            offset_ns,
        })
    }
}

#[cfg(not(target_os = "linux"))]
mod imp {
    pub(super) fn read() -> Option<super::KernelClock> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linux_answers_with_nonnegative_error_bounds() {
        if cfg!(target_os = "linux") {
            let k = kernel_clock().expect("adjtimex answers on Linux");
            assert!(k.est_error_us >= 0 && k.max_error_us >= 0, "{k:?}");
            // The kernel caps maxerror at 16 s (NTP_PHASE_LIMIT); an unsynchronised clock
            // reaches it.
            assert!(k.max_error_us <= 16_000_000, "{k:?}");
        }
    }
}
