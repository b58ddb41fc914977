//! How much memory a new allocation may take, so that sizes a user sets (shapes, layer
//! widths, batch sizes) are refused with a clear error before their buffers are
//! allocated: an allocation that fails aborts the process, and one that the kernel
//! overcommits ends in the OOM killer.

/// Bytes in a GiB, for messages.
const GIB: f64 = (1u64 << 30) as f64;

/// Needed and available memory, in GiB, of a request that does not fit.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Shortfall {
    /// GiB needed: infinite when the size overflows.
    pub needed_gib: f64,
    /// GiB available.
    pub available_gib: f64,
}

/// Whether `needed` bytes (`None`: a size that overflows) fit in the memory available.
pub(crate) fn check(needed: Option<usize>) -> Result<(), Shortfall> {
    let available = available();
    match needed {
        Some(n) if n <= available => Ok(()),
        _ => Err(Shortfall {
            needed_gib: needed.map_or(f64::INFINITY, gib),
            available_gib: gib(available),
        }),
    }
}

/// Memory available to new allocations: `MemAvailable` of `/proc/meminfo`, or the
/// largest size an allocation may have when that is unknown.
fn available() -> usize {
    read_available().unwrap_or(isize::MAX as usize)
}

fn read_available() -> Option<usize> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: usize = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

/// `bytes` in GiB.
fn gib(bytes: usize) -> f64 {
    bytes as f64 / GIB
}

/// `about 3.2 GiB` for a finite size in GiB, or what an infinite (overflowed) one means.
pub(crate) fn gib_text(gib: f64) -> String {
    if gib.is_finite() {
        format!("about {gib:.1} GiB")
    } else {
        "more memory than can be addressed".into()
    }
}
