//! GPU telemetry from this host's NVIDIA driver (NVML), for runs whose engine shares the client's
//! host: memory used, utilisation, power and SM clock per GPU, the same readings a DCGM
//! exporter gives ([`crate::parse_dcgm`]). libnvidia-ml is loaded when sampling starts, so a
//! host without a GPU or driver gets a notice, never a failure to start.

use std::time::Duration;

use nvml_wrapper::Nvml;
use nvml_wrapper::enum_wrappers::device::Clock;
use tokio_util::sync::CancellationToken;
use trace_format::{GpuReading, GpuSample};
use trace_sys::RunClock;

/// This host's GPUs through NVML.
pub struct NvmlGpus {
    nvml: Nvml,
    count: u32,
}

impl NvmlGpus {
    /// Loads the driver's library; Err says why not (no driver, no library, no GPU).
    pub fn open() -> Result<Self, String> {
        // The versioned name is what the driver installs; the bare one only comes with
        // development packages.
        let nvml = Nvml::builder()
            .lib_path(std::ffi::OsStr::new("libnvidia-ml.so.1"))
            .init()
            .or_else(|_| Nvml::init())
            .map_err(|e| format!("NVML not available ({e})"))?;
        let count = nvml
            .device_count()
            .map_err(|e| format!("NVML lists no GPUs ({e})"))?;
        if count == 0 {
            return Err("NVML lists no GPUs".into());
        }
        Ok(Self { nvml, count })
    }

    /// GPUs seen.
    pub fn count(&self) -> u32 {
        self.count
    }

    /// One reading per GPU; a field the GPU does not report stays empty.
    pub fn read(&self) -> Vec<GpuReading> {
        (0..self.count)
            .filter_map(|i| {
                let d = self.nvml.device_by_index(i).ok()?;
                Some(GpuReading {
                    gpu: i.to_string(),
                    mem_used_mib: d
                        .memory_info()
                        .ok()
                        .map(|m| m.used as f64 / (1024.0 * 1024.0)),
                    util_pct: d.utilization_rates().ok().map(|u| f64::from(u.gpu)),
                    power_w: d.power_usage().ok().map(|mw| f64::from(mw) / 1000.0),
                    sm_clock_mhz: d.clock_info(Clock::SM).ok().map(f64::from),
                })
            })
            .collect()
    }
}

/// Samples this host's GPUs every `period` until `stop`, on a blocking thread (NVML calls
/// block for a millisecond or so). Err when NVML cannot be opened.
pub async fn sample_nvml_every(
    period: Duration,
    clock: RunClock,
    stop: CancellationToken,
) -> Result<Vec<GpuSample>, String> {
    let gpus = tokio::task::spawn_blocking(NvmlGpus::open)
        .await
        .map_err(|e| e.to_string())??;
    tokio::task::spawn_blocking(move || {
        let mut out = Vec::new();
        let mut next = std::time::Instant::now();
        loop {
            let t_ns = clock.now_ns();
            let gpus = gpus.read();
            if !gpus.is_empty() {
                out.push(GpuSample { t_ns, gpus });
            }
            if stop.is_cancelled() {
                return out;
            }
            next += period;
            // Wake at least every 50 ms to see the stop.
            while std::time::Instant::now() < next {
                if stop.is_cancelled() {
                    break;
                }
                std::thread::sleep(
                    next.saturating_duration_since(std::time::Instant::now())
                        .min(Duration::from_millis(50)),
                );
            }
        }
    })
    .await
    .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Without a driver (CI), opening says why instead of failing the process; with one, every
    /// GPU reads back with its memory in range.
    #[test]
    fn open_either_reads_every_gpu_or_says_why_not() {
        match NvmlGpus::open() {
            Err(why) => assert!(why.contains("NVML"), "{why}"),
            Ok(g) => {
                let r = g.read();
                assert_eq!(r.len() as u32, g.count());
                for x in r {
                    let m = x.mem_used_mib.expect("memory is always reported");
                    assert!((0.0..4.0e6).contains(&m), "{m}");
                }
            }
        }
    }
}
