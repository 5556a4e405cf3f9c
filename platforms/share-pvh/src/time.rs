//! Xen's PV clock: nanoseconds of Xen system time, from the `vcpu_time_info`
//! of vCPU 0 in the shared info page, extrapolated with the TSC.
//!
//! The same time base is what `SCHEDOP_poll` takes as its timeout, so a
//! deadline computed from [`now_ns`] can be handed to Xen unchanged.

use core::sync::atomic::{fence, AtomicU64, Ordering};

use spin::Once;

use super::abi::*;
use super::cpu;
use share_hal::volatile::SharedMem;

static SHARED_INFO: Once<SharedMem<'static>> = Once::new();
/// The largest time handed out, so that `now_ns` never goes backwards even
/// if Xen's extrapolation parameters jump.
static LAST: AtomicU64 = AtomicU64::new(0);

/// Records the shared info page (mapped by `super::init`).
pub(super) fn set_shared_info(page: SharedMem<'static>) {
    SHARED_INFO.call_once(|| page);
}

pub(super) fn shared_info() -> Option<&'static SharedMem<'static>> {
    SHARED_INFO.get()
}

/// One consistent snapshot of `vcpu_time_info`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimeInfo {
    pub tsc_timestamp: u64,
    pub system_time: u64,
    pub tsc_to_system_mul: u32,
    pub tsc_shift: i8,
}

impl TimeInfo {
    /// Xen system time at TSC value `tsc`.
    pub fn at(&self, tsc: u64) -> u64 {
        let mut delta = tsc.saturating_sub(self.tsc_timestamp);
        if self.tsc_shift >= 0 {
            delta = delta.checked_shl(self.tsc_shift as u32).unwrap_or(u64::MAX);
        } else {
            delta = delta
                .checked_shr(self.tsc_shift.unsigned_abs() as u32)
                .unwrap_or(0);
        }
        let scaled = (u128::from(delta) * u128::from(self.tsc_to_system_mul)) >> 32;
        self.system_time.saturating_add(scaled as u64)
    }
}

/// Reads `vcpu_time_info` with Xen's version protocol: an odd version means
/// an update is under way, a changed version means the read was torn.
fn snapshot(si: &SharedMem<'_>) -> Option<TimeInfo> {
    let t = SHARED_INFO_VCPU0_TIME;
    loop {
        let v1 = si.load_u32(t + VCPU_TIME_VERSION, Ordering::Acquire).ok()?;
        if v1 & 1 == 1 {
            core::hint::spin_loop();
            continue;
        }
        let info = TimeInfo {
            tsc_timestamp: si.read_u64(t + VCPU_TIME_TSC_TIMESTAMP).ok()?,
            system_time: si.read_u64(t + VCPU_TIME_SYSTEM_TIME).ok()?,
            tsc_to_system_mul: si.read_u32(t + VCPU_TIME_TSC_TO_SYSTEM_MUL).ok()?,
            tsc_shift: si.read_u8(t + VCPU_TIME_TSC_SHIFT).ok()? as i8,
        };
        fence(Ordering::Acquire);
        let v2 = si.load_u32(t + VCPU_TIME_VERSION, Ordering::Acquire).ok()?;
        if v1 == v2 {
            return Some(info);
        }
    }
}

/// Xen system time in nanoseconds; 0 before the shared info page is mapped
/// (or when not running on Xen). Never goes backwards.
pub fn now_ns() -> u64 {
    let Some(si) = SHARED_INFO.get() else {
        return 0;
    };
    let Some(info) = snapshot(si) else {
        return LAST.load(Ordering::Relaxed);
    };
    let now = info.at(cpu::rdtsc());
    let last = LAST.fetch_max(now, Ordering::Relaxed);
    now.max(last)
}

/// Whether Xen system time has reached `deadline_ns`. Answers from the
/// latest time handed out when that already passed it, without an RDTSC:
/// where Xen emulates RDTSC (no invariant TSC, or `tsc_mode =
/// "always_emulate"`) every read is an exit to Xen, and a busy loop asks
/// this with the deadline it just read from [`now_ns`].
pub fn passed(deadline_ns: u64) -> bool {
    deadline_ns <= LAST.load(Ordering::Relaxed) || now_ns() >= deadline_ns
}

/// How Xen presents the TSC to this domain (its CPUID leaf base + 3,
/// sub-leaf 0).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TscMode {
    /// RDTSC traps to Xen (`vtsc`): every [`now_ns`] costs an exit.
    pub emulated: bool,
    /// Xen's `tsc_mode` (0 default, 1 always_emulate, 2 native,
    /// 3 native_paravirt).
    pub mode: u32,
    /// The guest TSC frequency in kHz.
    pub khz: u32,
}

impl TscMode {
    /// From the registers of Xen's leaf base + 3.
    pub fn from_cpuid(eax: u32, ebx: u32, ecx: u32) -> TscMode {
        TscMode {
            emulated: eax & 1 != 0,
            mode: ebx,
            khz: ecx,
        }
    }

    /// The `tsc_mode` name of xl.cfg.
    pub fn mode_name(&self) -> &'static str {
        match self.mode {
            0 => "default",
            1 => "always_emulate",
            2 => "native",
            3 => "native_paravirt",
            _ => "unknown",
        }
    }
}

/// Xen's TSC mode for this domain; `None` when not on Xen.
pub fn tsc_mode() -> Option<TscMode> {
    let base = cpu::xen_cpuid_base()?;
    let (max, ..) = cpu::cpuid(base);
    if max < base + 3 {
        return None;
    }
    let (eax, ebx, ecx, _) = cpu::cpuid(base + 3);
    Some(TscMode::from_cpuid(eax, ebx, ecx))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extrapolation_scales_and_shifts() {
        // 2 GHz TSC: mul = 2^31 (0.5 ns per tick), no shift.
        let info = TimeInfo {
            tsc_timestamp: 1000,
            system_time: 5_000,
            tsc_to_system_mul: 1 << 31,
            tsc_shift: 0,
        };
        assert_eq!(info.at(1000), 5_000);
        assert_eq!(info.at(3000), 6_000);
        // A TSC behind the stamp does not go back in time.
        assert_eq!(info.at(10), 5_000);
        let shifted = TimeInfo {
            tsc_shift: -1,
            ..info
        };
        assert_eq!(shifted.at(3000), 5_500);
        let up = TimeInfo {
            tsc_shift: 2,
            ..info
        };
        assert_eq!(up.at(3000), 9_000);
        // Absurd parameters saturate instead of panicking.
        let wild = TimeInfo {
            tsc_timestamp: 0,
            system_time: u64::MAX - 1,
            tsc_to_system_mul: u32::MAX,
            tsc_shift: 127,
        };
        assert_eq!(wild.at(u64::MAX), u64::MAX);
        let wild = TimeInfo {
            tsc_shift: -128,
            ..wild
        };
        assert_eq!(wild.at(u64::MAX), u64::MAX - 1);
    }

    #[test]
    fn snapshot_reads_the_documented_offsets() {
        let mut page = Page([0; 4096]);
        let si = SharedMem::from_slice(&mut page.0);
        let t = SHARED_INFO_VCPU0_TIME;
        si.write_u32(t + VCPU_TIME_VERSION, 4).unwrap();
        si.write_u64(t + VCPU_TIME_TSC_TIMESTAMP, 77).unwrap();
        si.write_u64(t + VCPU_TIME_SYSTEM_TIME, 123).unwrap();
        si.write_u32(t + VCPU_TIME_TSC_TO_SYSTEM_MUL, 9).unwrap();
        si.write_u8(t + VCPU_TIME_TSC_SHIFT, (-3i8) as u8).unwrap();
        assert_eq!(
            snapshot(&si),
            Some(TimeInfo {
                tsc_timestamp: 77,
                system_time: 123,
                tsc_to_system_mul: 9,
                tsc_shift: -3
            })
        );
    }

    #[test]
    fn passed_answers_from_the_latest_time_without_the_clock() {
        // Off Xen the clock reads 0: a deadline counts as passed only
        // through the time already handed out.
        LAST.fetch_max(1_000, Ordering::Relaxed);
        assert!(passed(999));
        assert!(passed(1_000));
        assert!(!passed(u64::MAX));
    }

    #[test]
    fn tsc_mode_reads_xens_leaf() {
        let m = TscMode::from_cpuid(0b101, 2, 1_000_000);
        assert!(m.emulated);
        assert_eq!((m.mode, m.khz, m.mode_name()), (2, 1_000_000, "native"));
        let m = TscMode::from_cpuid(0b110, 7, 0);
        assert!(!m.emulated);
        assert_eq!(m.mode_name(), "unknown");
    }

    #[repr(align(8))]
    struct Page([u8; 4096]);
}
