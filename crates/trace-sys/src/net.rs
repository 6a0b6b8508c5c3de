//! Listening sockets for every server the toolkit runs (the simulator, the recording proxy, the
//! coordinator): a 4096-deep accept queue, and SO_REUSEPORT for one listener per serving thread.

use std::net::SocketAddr;

/// Accept-queue length. std's and tokio's `bind` ask for 128: when a load generator opens
/// hundreds of streams at once (a rate of `inf`, a proxy fanning 500 clients out), handshakes
/// beyond it are dropped and retried by the client's kernel a second later, which reads as a
/// second of TTFT. The kernel caps it at `net.core.somaxconn`.
pub const BACKLOG: i32 = 4096;

/// A non-blocking listening socket with a [`BACKLOG`]-deep accept queue.
pub fn listen(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    bind_listener(addr, false)
}

/// Like [`listen`], with SO_REUSEPORT: more listeners may bind the same address (one per
/// serving thread), and the kernel spreads new connections over them. Check the port with
/// [`ensure_port_free`] first: SO_REUSEPORT would otherwise share a port another process of the
/// same user listens on, silently.
pub fn listen_shared(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    bind_listener(addr, true)
}

/// Fails when something already listens on `addr` (port 0 always passes).
pub fn ensure_port_free(addr: SocketAddr) -> std::io::Result<()> {
    if addr.port() == 0 {
        return Ok(());
    }
    let probe = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        None,
    )?;
    probe.set_reuse_address(true)?;
    probe.bind(&addr.into())
}

fn bind_listener(addr: SocketAddr, share_port: bool) -> std::io::Result<std::net::TcpListener> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    if share_port {
        socket.set_reuse_port(true)?;
    }
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    #[test]
    fn hundreds_of_simultaneous_handshakes_fit_the_accept_queue() {
        // The kernel caps the backlog at net.core.somaxconn; below 300 this cannot hold.
        let cap: i32 = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0);
        if cap < 300 {
            eprintln!("skipped: net.core.somaxconn is {cap}");
            return;
        }
        let l = super::listen(([127, 0, 0, 1], 0).into()).unwrap();
        let addr = l.local_addr().unwrap();
        // Nobody accepts: every handshake must complete in the queue. With std's backlog of
        // 128 the 130th connect would wait for a SYN retry and time out here.
        let mut open = Vec::new();
        for i in 0..300 {
            match std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(3)) {
                Ok(s) => open.push(s),
                Err(e) => panic!("connect {i} failed: {e}"),
            }
        }
        assert_eq!(open.len(), 300);
    }

    #[test]
    fn a_port_in_use_is_not_free() {
        let l = super::listen_shared(([127, 0, 0, 1], 0).into()).unwrap();
        let addr = l.local_addr().unwrap();
        assert!(super::ensure_port_free(addr).is_err());
        drop(l);
        assert!(super::ensure_port_free(([127, 0, 0, 1], 0).into()).is_ok());
    }
}
