//! How much memory a new allocation may take, so that sizes a user sets (shapes, layer
//! widths, batch sizes) are refused with a clear error before their buffers are
//! allocated: an allocation that fails aborts the process, and one that the kernel
//! overcommits ends in the OOM killer.

/// Bytes in a GiB, for messages.
const GIB: f64 = (1u64 << 30) as f64;

/// Memory available to new allocations: `MemAvailable` of `/proc/meminfo`, or the
/// largest size an allocation may have when that is unknown.
pub(crate) fn available() -> usize {
    read_available().unwrap_or(isize::MAX as usize)
}

fn read_available() -> Option<usize> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: usize = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

/// `bytes` in GiB.
pub(crate) fn gib(bytes: usize) -> f64 {
    bytes as f64 / GIB
}
