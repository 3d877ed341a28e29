//! Deliberate collector bugs, for negative controls.
//!
//! A test suite that runs the VM under Memcheck and sees no errors proves little unless the same suite
//! fails when the collector is wrong. `VMRUN_GC_DEBUG` plants one real bug of a kind a collector can
//! have, so the Memcheck tests can show that each is caught (and, with the Valgrind bridge compiled out,
//! that `skip-mark` is not: the annotations are what catch it). `skip-stopped-roots` is the negative control
//! of the multi-threaded collection tests (`tests/world.rs`). Never set it outside tests.

use std::fmt;

/// One planted collector bug.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InjectedBug {
    /// In the first collection that reaches an object through a field, that object is neither marked nor
    /// scanned: the sweep frees it (and everything only it reaches) while the program still uses it.
    SkipMark,
    /// The marker's scan loop is off by one: after scanning an object it reads the word just past the
    /// object's end.
    ReadPastEnd,
    /// The first empty span the sweep returns to the page heap is written to afterwards.
    UseFreedSpan,
    /// The collector marks only from the collecting mutator's roots, not from the root sets the other
    /// mutators published while parked or native: what they alone keep alive is freed under them.
    SkipStoppedRoots,
}

impl InjectedBug {
    /// The environment variable the VM reads the bug from.
    pub const ENV: &'static str = "VMRUN_GC_DEBUG";

    const ALL: [(&'static str, InjectedBug); 4] = [
        ("skip-mark", InjectedBug::SkipMark),
        ("read-past-end", InjectedBug::ReadPastEnd),
        ("use-freed-span", InjectedBug::UseFreedSpan),
        ("skip-stopped-roots", InjectedBug::SkipStoppedRoots),
    ];

    /// Parses `skip-mark`, `read-past-end`, `use-freed-span` or `skip-stopped-roots`.
    pub fn parse(s: &str) -> Result<InjectedBug, String> {
        Self::ALL.iter().find(|(name, _)| *name == s).map(|&(_, bug)| bug).ok_or_else(|| {
            let names: Vec<&str> = Self::ALL.iter().map(|(n, _)| *n).collect();
            format!("{}={s:?} is not one of {}", Self::ENV, names.join(", "))
        })
    }

    /// The bug named by `VMRUN_GC_DEBUG`, if it is set (and not empty).
    pub fn from_env() -> Result<Option<InjectedBug>, String> {
        match std::env::var(Self::ENV) {
            Ok(v) if !v.is_empty() => Self::parse(&v).map(Some),
            _ => Ok(None),
        }
    }
}

impl fmt::Display for InjectedBug {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = Self::ALL.iter().find(|(_, b)| b == self).map_or("?", |(n, _)| n);
        f.write_str(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_names_are_rejected() {
        for (name, bug) in InjectedBug::ALL {
            assert_eq!(InjectedBug::parse(name), Ok(bug));
            assert_eq!(bug.to_string(), name);
        }
        let err = InjectedBug::parse("skip").unwrap_err();
        assert!(err.contains("skip-mark, read-past-end, use-freed-span, skip-stopped-roots"), "{err}");
    }
}
