//! `poll_oneoff`: wait for clocks and descriptor readiness.
//!
//! Each 48-byte subscription becomes a [`Wait`]: a clock deadline (relative, or absolute on its
//! clock, turned into nanoseconds from now), a host descriptor to `poll(2)` (a standard stream
//! that is the process's own), or an event that is ready at once (regular files are always ready,
//! as POSIX says; an embedder's in-memory stream has nothing to wait for; a bad descriptor is
//! an event carrying its errno). The call then waits with one host `poll` whose timeout is the
//! earliest deadline (no wait at all when something is ready at once) and writes one 32-byte event
//! per subscription that is ready.

use super::abi::{Errno, GuestMemory, eventtype, rights};
use super::fdtable::Kind;
use super::syscalls::{WasiState, now, offset};
use rustix::event::{PollFd, PollFlags};

/// What one subscription waits for.
enum Wait {
    /// Ready when `ns` nanoseconds have passed.
    Clock(u64),
    /// Ready when host `poll` says so for subscription fd `fd`.
    Host(u32, PollFlags),
    /// Ready now: success with a byte count, or an error.
    Now(Result<u64, Errno>),
}

const SUCCESS: u16 = 0;

fn field_u64(sub: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(sub[at..at + 8].try_into().unwrap_or([0; 8]))
}

impl WasiState {
    /// What subscription `sub` waits for.
    fn wait_for(&self, sub: &[u8]) -> Wait {
        let tag = sub[8];
        if tag == eventtype::CLOCK {
            const ABSTIME: u16 = 1;
            let clock = u32::from_le_bytes(sub[16..20].try_into().unwrap_or([0; 4]));
            let timeout = field_u64(sub, 24);
            let flags = u16::from_le_bytes([sub[40], sub[41]]);
            return match now(clock) {
                Ok(t) if flags & ABSTIME != 0 => Wait::Clock(timeout.saturating_sub(t)),
                Ok(_) => Wait::Clock(timeout),
                Err(e) => Wait::Now(Err(e)),
            };
        }
        let fd = u32::from_le_bytes(sub[16..20].try_into().unwrap_or([0; 4]));
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
            Kind::Stream(s) if s.host.is_some() => Wait::Host(fd, flags),
            Kind::Stream(_) => Wait::Now(Ok(0)),
            Kind::File(f) if tag == eventtype::FD_READ => {
                // Bytes left to read: size minus cursor.
                let left = rustix::fs::fstat(f).ok().zip(rustix::fs::tell(f).ok());
                Wait::Now(Ok(left.map_or(0, |(st, pos)| (st.st_size as u64).saturating_sub(pos))))
            }
            Kind::File(_) => Wait::Now(Ok(0)),
            Kind::Dir(_) => Wait::Now(Err(Errno::Isdir)),
        }
    }

    pub fn poll_oneoff(
        &mut self,
        mem: &mut GuestMemory,
        subs: u32,
        events: u32,
        count: u32,
        nevents: u32,
    ) -> Result<(), Errno> {
        if count == 0 {
            return Err(Errno::Inval);
        }
        let raw = mem.slice(subs, count.checked_mul(48).ok_or(Errno::Fault)?)?.to_vec();
        mem.slice(events, count.checked_mul(32).ok_or(Errno::Fault)?)?;
        let waits: Vec<(&[u8], Wait)> = raw.chunks_exact(48).map(|s| (s, self.wait_for(s))).collect();
        let ready_now = waits.iter().any(|(_, w)| matches!(w, Wait::Now(_)));
        let first_deadline =
            waits.iter().filter_map(|(_, w)| if let Wait::Clock(ns) = w { Some(*ns) } else { None }).min();
        let timeout_ns = if ready_now { Some(0) } else { first_deadline };
        let started = std::time::Instant::now();
        let ready = self.poll_host(&waits, timeout_ns)?;
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

    /// Wait on the host descriptors among `waits` for up to `timeout_ns` (forever if `None`);
    /// return (index in `waits`, hung up) of each one that is ready.
    fn poll_host(&self, waits: &[(&[u8], Wait)], timeout_ns: Option<u64>) -> Result<Vec<(usize, bool)>, Errno> {
        let mut index = Vec::new();
        let mut fds = Vec::new();
        for (i, (_, w)) in waits.iter().enumerate() {
            if let Wait::Host(fd, flags) = w
                && let Ok(Kind::Stream(s)) = self.fds.get(*fd).map(|e| &e.kind)
                && let Some(host) = &s.host
            {
                index.push(i);
                fds.push(PollFd::new(host, *flags));
            }
        }
        let timeout = timeout_ns.map(|ns| rustix::time::Timespec {
            tv_sec: (ns / 1_000_000_000) as i64,
            tv_nsec: (ns % 1_000_000_000) as _,
        });
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
}
