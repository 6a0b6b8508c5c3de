//! CPU affinity: which CPUs this thread may run on, and pinning to a set of them. Selfcheck and
//! the proxy benchmark put the simulator and the client on separate CPUs with these.

/// The CPUs the calling thread may run on (empty when the OS does not say).
pub fn allowed_cpus() -> Vec<usize> {
    match rustix::thread::sched_getaffinity(None) {
        Ok(set) => (0..rustix::thread::CpuSet::MAX_CPU)
            .filter(|&c| set.is_set(c))
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// Pins the calling thread (and the threads it spawns afterwards: Linux threads inherit their
/// creator's affinity) to `cpus`. False when the OS refused.
pub fn pin_current(cpus: &[usize]) -> bool {
    let mut set = rustix::thread::CpuSet::new();
    for &c in cpus {
        set.set(c);
    }
    rustix::thread::sched_setaffinity(None, &set).is_ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn pinning_to_the_allowed_set_keeps_it() {
        let cpus = super::allowed_cpus();
        assert!(!cpus.is_empty());
        let t = std::thread::spawn(move || {
            assert!(super::pin_current(&cpus[..1]));
            super::allowed_cpus()
        });
        assert_eq!(t.join().unwrap().len(), 1);
    }
}
