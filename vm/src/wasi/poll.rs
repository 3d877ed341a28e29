//! `poll_oneoff`: wait for clocks and descriptor readiness.
//!
//! Each subscription (48 bytes in preview1, 56 in preview 0, whose clock record has an extra
//! `identifier`: [`SubscriptionLayout`]) becomes a [`Wait`]: a clock deadline (relative, or absolute on its
//! clock, turned into nanoseconds from now), a host descriptor to `poll(2)` (a standard stream
//! that is the process's own), or an event that is ready at once (regular files are always ready,
//! as POSIX says; an embedder's in-memory stream has nothing to wait for; a bad descriptor is
//! an event carrying its errno). The call then waits with one host `poll` whose timeout is the
//! earliest deadline (no wait at all when something is ready at once) and writes one 32-byte event
//! per subscription that is ready.
//!
//! Guest threads share the WASI state, so the subscriptions are turned into waits under its lock
//! (a stream's host descriptor is duplicated) and the wait runs with the lock released: a thread
//! sleeping in `poll_oneoff` never holds up another thread's `fd_write`.

use super::abi::{Errno, GuestMemory, eventtype, rights};
use super::fdtable::Kind;
use super::syscalls::{WasiState, lock, now, offset};
use rustix::event::{PollFd, PollFlags};
use rustix::fd::OwnedFd;
use std::sync::Mutex;

/// Where a snapshot puts the fields of a `subscription` (the clock ones differ; the userdata
/// (@0), tag (@8) and `fd_readwrite`'s descriptor (@16) do not, nor does the 32-byte `event`).
#[derive(Clone, Copy, Debug)]
pub(crate) struct SubscriptionLayout {
    pub size: usize,
    pub clock_id: usize,
    pub timeout: usize,
    pub flags: usize,
}

/// Preview1: `subscription_clock` is id u32 @16, timeout @24, precision @32, flags u16 @40.
pub(crate) const PREVIEW1: SubscriptionLayout = SubscriptionLayout { size: 48, clock_id: 16, timeout: 24, flags: 40 };
/// Preview 0: `subscription_clock` starts with a u64 `identifier` @16 (unused: the event carries
/// the subscription's userdata), then id u32 @24, timeout @32, precision @40, flags u16 @48.
pub(crate) const PREVIEW0: SubscriptionLayout = SubscriptionLayout { size: 56, clock_id: 24, timeout: 32, flags: 48 };

/// What one subscription waits for.
enum Wait {
    /// Ready when `ns` nanoseconds have passed.
    Clock(u64),
    /// Ready when host `poll` says so for this descriptor (a duplicate of the stream's, so the
    /// wait needs no lock on the table).
    Host(OwnedFd, PollFlags),
    /// Ready now: success with a byte count, or an error.
    Now(Result<u64, Errno>),
}

const SUCCESS: u16 = 0;

fn field_u64(sub: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(sub[at..at + 8].try_into().unwrap_or([0; 8]))
}

fn field_u32(sub: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(sub[at..at + 4].try_into().unwrap_or([0; 4]))
}

impl WasiState {
    /// What subscription `sub` (in `layout`) waits for.
    fn wait_for(&self, sub: &[u8], layout: SubscriptionLayout) -> Wait {
        let tag = sub[8];
        if tag == eventtype::CLOCK {
            const ABSTIME: u16 = 1;
            let clock = field_u32(sub, layout.clock_id);
            let timeout = field_u64(sub, layout.timeout);
            let flags = u16::from_le_bytes([sub[layout.flags], sub[layout.flags + 1]]);
            return match now(clock) {
                Ok(t) if flags & ABSTIME != 0 => Wait::Clock(timeout.saturating_sub(t)),
                Ok(_) => Wait::Clock(timeout),
                Err(e) => Wait::Now(Err(e)),
            };
        }
        let fd = field_u32(sub, 16);
        let entry = match self.fds.get(fd) {
            Ok(e) => e,
            Err(e) => return Wait::Now(Err(e)),
        };
        if let Err(e) = entry.require(rights::POLL_FD_READWRITE) {
            return Wait::Now(Err(e));
        }
        let flags = match tag {
            eventtype::FD_READ => PollFlags::IN,
            eventtype::FD_WRITE => PollFlags::OUT,
            _ => return Wait::Now(Err(Errno::Inval)),
        };
        match &entry.kind {
            Kind::Stream(s) => match s.host.as_ref().map(|h| h.try_clone()) {
                Some(Ok(dup)) => Wait::Host(dup, flags),
                Some(Err(e)) => Wait::Now(Err(Errno::from_io(&e))),
                None => Wait::Now(Ok(0)),
            },
            Kind::File(f) if tag == eventtype::FD_READ => {
                // Bytes left to read: size minus cursor.
                let left = rustix::fs::fstat(f).ok().zip(rustix::fs::tell(f).ok());
                Wait::Now(Ok(left.map_or(0, |(st, pos)| (st.st_size as u64).saturating_sub(pos))))
            }
            Kind::File(_) => Wait::Now(Ok(0)),
            Kind::Dir(_) => Wait::Now(Err(Errno::Isdir)),
        }
    }
}

/// `poll_oneoff` with subscriptions in `layout`. The subscriptions are read under the state lock
/// (host descriptors duplicated), and the wait itself (a sleep or a host `poll`, possibly
/// forever) happens with the lock released, so other threads' WASI calls go on meanwhile.
pub(crate) fn poll_oneoff(
    state: &Mutex<WasiState>,
    mem: &mut GuestMemory,
    layout: SubscriptionLayout,
    (subs, events, count, nevents): (u32, u32, u32, u32),
) -> Result<(), Errno> {
    if count == 0 {
        return Err(Errno::Inval);
    }
    let raw = mem.slice(subs, count.checked_mul(layout.size as u32).ok_or(Errno::Fault)?)?.to_vec();
    mem.slice(events, count.checked_mul(32).ok_or(Errno::Fault)?)?;
    let guard = lock(state);
    let waits: Vec<(&[u8], Wait)> = raw.chunks_exact(layout.size).map(|s| (s, guard.wait_for(s, layout))).collect();
    // Released before waiting (the planted bug keeps it through the wait).
    let _held = if planted_bug_poll_holds_lock() {
        Some(guard)
    } else {
        drop(guard);
        None
    };
    let ready_now = waits.iter().any(|(_, w)| matches!(w, Wait::Now(_)));
    let first_deadline = waits.iter().filter_map(|(_, w)| if let Wait::Clock(ns) = w { Some(*ns) } else { None }).min();
    let timeout_ns = if ready_now { Some(0) } else { first_deadline };
    let started = std::time::Instant::now();
    let ready = poll_host(&waits, timeout_ns)?;
    let waited = started.elapsed().as_nanos() as u64;
    let mut written = 0usize;
    for (i, (sub, wait)) in waits.iter().enumerate() {
        let (error, nbytes, flags) = match wait {
            // The earliest clock fires when the wait timed out, even if the host woke a
            // hair early.
            Wait::Clock(ns) if *ns <= waited || (Some(*ns) == first_deadline && !ready_now && ready.is_empty()) => {
                (SUCCESS, 0, 0)
            }
            Wait::Clock(_) => continue,
            Wait::Host(..) => match ready.iter().find(|r| r.0 == i) {
                Some(&(_, hangup)) => (SUCCESS, 0, u16::from(hangup)),
                None => continue,
            },
            Wait::Now(Ok(n)) => (SUCCESS, *n, 0),
            Wait::Now(Err(e)) => (*e as u16, 0, 0),
        };
        let mut event = [0u8; 32];
        event[0..8].copy_from_slice(&sub[0..8]);
        event[8..10].copy_from_slice(&error.to_le_bytes());
        event[10] = sub[8];
        event[16..24].copy_from_slice(&nbytes.to_le_bytes());
        event[24..26].copy_from_slice(&flags.to_le_bytes());
        mem.write_bytes(offset(events, written * 32)?, &event)?;
        written += 1;
    }
    mem.write_u32(nevents, written as u32)
}

/// `VMRUN_VM_DEBUG=wasi-poll-holds-lock`: the planted bug `tests/wasi_threads.rs` shows its
/// blocked-input test catches (`poll_oneoff` waits with the state locked).
fn planted_bug_poll_holds_lock() -> bool {
    static PLANTED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *PLANTED.get_or_init(|| std::env::var_os("VMRUN_VM_DEBUG").is_some_and(|v| v == "wasi-poll-holds-lock"))
}

/// Wait on the host descriptors among `waits` for up to `timeout_ns` (forever if `None`);
/// return (index in `waits`, hung up) of each one that is ready.
fn poll_host(waits: &[(&[u8], Wait)], timeout_ns: Option<u64>) -> Result<Vec<(usize, bool)>, Errno> {
    let mut index = Vec::new();
    let mut fds = Vec::new();
    for (i, (_, w)) in waits.iter().enumerate() {
        if let Wait::Host(host, flags) = w {
            index.push(i);
            fds.push(PollFd::new(host, *flags));
        }
    }
    let timeout = timeout_ns
        .map(|ns| rustix::time::Timespec { tv_sec: (ns / 1_000_000_000) as i64, tv_nsec: (ns % 1_000_000_000) as _ });
    if fds.is_empty() {
        if let Some(t) = timeout_ns.filter(|&t| t > 0) {
            std::thread::sleep(std::time::Duration::from_nanos(t));
        }
        return Ok(Vec::new());
    }
    loop {
        match rustix::event::poll(&mut fds, timeout.as_ref()) {
            Err(e) if e == rustix::io::Errno::INTR => continue,
            r => r?,
        };
        break;
    }
    Ok(fds
        .iter()
        .zip(index)
        .filter(|(p, _)| !p.revents().is_empty())
        .map(|(p, i)| (i, p.revents().contains(PollFlags::HUP)))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::super::abi::clockid;
    use super::super::syscalls::testing::*;
    use super::*;
    use std::time::{Duration, Instant};

    fn poll(s: &mut WasiState, mem: &mut GuestMemory, subs: u32, events: u32, count: u32, n: u32) -> Result<(), Errno> {
        let shared = Mutex::new(std::mem::replace(s, state(b"", Captured::default())));
        let r = poll_oneoff(&shared, mem, PREVIEW1, (subs, events, count, n));
        *s = shared.into_inner().unwrap();
        r
    }

    /// A clock subscription at `at`: userdata, monotonic, `ns`, flags.
    fn clock_sub(mem: &mut GuestMemory, at: u32, userdata: u64, ns: u64, flags: u16) {
        mem.write_bytes(at, &[0; 48]).unwrap();
        mem.write_u64(at, userdata).unwrap();
        mem.write_u32(at + 16, clockid::MONOTONIC).unwrap();
        mem.write_u64(at + 24, ns).unwrap();
        mem.write_bytes(at + 40, &flags.to_le_bytes()).unwrap();
    }

    fn fd_sub(mem: &mut GuestMemory, at: u32, userdata: u64, tag: u8, fd: u32) {
        mem.write_bytes(at, &[0; 48]).unwrap();
        mem.write_u64(at, userdata).unwrap();
        mem.write_u8(at + 8, tag).unwrap();
        mem.write_u32(at + 16, fd).unwrap();
    }

    #[test]
    fn clocks_sleep_until_the_first_deadline() {
        let mut s = state(b"", Captured::default());
        let mut bytes = vec![0u8; 512];
        let mut mem = GuestMemory::new(&mut bytes);
        clock_sub(&mut mem, 0, 7, 20_000_000, 0);
        clock_sub(&mut mem, 48, 8, 5_000_000_000, 0);
        let started = Instant::now();
        poll(&mut s, &mut mem, 0, 200, 2, 400).unwrap();
        let took = started.elapsed();
        assert!(took >= Duration::from_millis(20) && took < Duration::from_secs(2), "{took:?}");
        assert_eq!(mem.read_u32(400), Ok(1), "only the 20 ms clock fired");
        assert_eq!((u64_at(&mem, 200), mem.slice(208, 3)), (7, Ok(&[0, 0, eventtype::CLOCK][..])));
        // An absolute deadline in the past fires at once.
        clock_sub(&mut mem, 0, 9, 1, 1);
        poll(&mut s, &mut mem, 0, 200, 1, 400).unwrap();
        assert_eq!((mem.read_u32(400), u64_at(&mem, 200)), (Ok(1), 9));
        assert_eq!(poll(&mut s, &mut mem, 0, 200, 0, 400), Err(Errno::Inval));
        assert_eq!(poll(&mut s, &mut mem, 0, 200, 20, 400), Err(Errno::Fault));
    }

    #[test]
    fn preview0_clock_subscriptions_have_an_identifier_first() {
        let shared = Mutex::new(state(b"", Captured::default()));
        let mut bytes = vec![0u8; 512];
        let mut mem = GuestMemory::new(&mut bytes);
        // userdata 5, clock tag, identifier 77, monotonic, 30 ms relative; then a 10 s clock.
        for (at, userdata, ns) in [(0u32, 5u64, 30_000_000u64), (56, 6, 10_000_000_000)] {
            mem.write_u64(at, userdata).unwrap();
            mem.write_u64(at + 16, 77).unwrap();
            mem.write_u32(at + 24, clockid::MONOTONIC).unwrap();
            mem.write_u64(at + 32, ns).unwrap();
        }
        let started = Instant::now();
        poll_oneoff(&shared, &mut mem, PREVIEW0, (0, 200, 2, 400)).unwrap();
        let took = started.elapsed();
        assert!(took >= Duration::from_millis(30) && took < Duration::from_secs(5), "{took:?}");
        assert_eq!((mem.read_u32(400), u64_at(&mem, 200)), (Ok(1), 5), "the 30 ms clock fired, by its userdata");
        // Read as preview1, the same bytes are a clock 77 (no such clock): an `inval` event at once.
        poll_oneoff(&shared, &mut mem, PREVIEW1, (0, 200, 1, 400)).unwrap();
        assert_eq!(mem.slice(208, 2), Ok(&(Errno::Inval as u16).to_le_bytes()[..]));
    }

    #[test]
    fn descriptors_are_ready_or_report_their_errno_without_waiting() {
        let (mut s, _sb) = with_preopen("poll");
        let mut bytes = vec![0u8; 512];
        let mut mem = GuestMemory::new(&mut bytes);
        let p = put_path(&mut mem, "sub/data.txt");
        s.path_open(&mut mem, 3, 0, p, 0, (rights::FD_READ | rights::POLL_FD_READWRITE, 0), 0, 0).unwrap();
        let file = mem.read_u32(0).unwrap();
        fd_sub(&mut mem, 0, 1, eventtype::FD_READ, file);
        fd_sub(&mut mem, 48, 2, eventtype::FD_WRITE, 99);
        fd_sub(&mut mem, 96, 3, eventtype::FD_WRITE, 1);
        clock_sub(&mut mem, 144, 4, 10_000_000_000, 0);
        let started = Instant::now();
        poll(&mut s, &mut mem, 0, 200, 4, 400).unwrap();
        assert!(started.elapsed() < Duration::from_secs(5), "nothing waits for the 10 s clock");
        assert_eq!(mem.read_u32(400), Ok(3));
        // The file: 10 bytes left to read.
        assert_eq!((u64_at(&mem, 200), mem.slice(208, 2), u64_at(&mem, 216)), (1, Ok(&[0, 0][..]), 10));
        // A closed descriptor is an event carrying `badf`.
        assert_eq!((u64_at(&mem, 232), mem.slice(240, 2)), (2, Ok(&(Errno::Badf as u16).to_le_bytes()[..])));
        assert_eq!(u64_at(&mem, 264), 3, "an in-memory stream is always ready");
    }
}
