//! trace-sys: host plumbing with no central type, shared by every part of `trace` that runs on
//! a host (the client, the recording proxy, the simulator, selfcheck). Like ripgrep's grep-cli,
//! it is a utility library: each module is a few OS-facing helpers.
//!
//! - [`RunClock`]: a run's one wall-clock reading paired with a monotonic instant, and the
//!   offsets (`*_ns` columns) every time is stored as;
//! - [`listen`] / [`listen_shared`]: listening sockets with a 4096-deep accept queue;
//! - [`raise_nofile_limit`], [`nofile_limit`]: the open-file limit;
//! - [`allowed_cpus`], [`pin_current`]: CPU affinity;
//! - [`same_file`]: file identity (device and inode), so no output overwrites an input;
//! - [`tls`]: the rustls provider, PEM files, and the server side's TLS acceptor;
//! - [`kernel_clock`]: the kernel's estimate of the wall clock's error (adjtimex);
//! - [`process`]: engine processes a campaign starts and stops (process groups, SIGINT first).
//!
//! It depends on no other trace crate.

mod clock;
mod cpu;
mod fs;
mod kernel_clock;
mod limits;
mod net;
pub mod process;
pub mod tls;

pub use clock::RunClock;
pub use cpu::{allowed_cpus, pin_current};
pub use fs::{hostname, same_file};
pub use kernel_clock::{KernelClock, kernel_clock};
pub use limits::{nofile_limit, raise_nofile_limit};
pub use net::{BACKLOG, ensure_port_free, listen, listen_shared};
