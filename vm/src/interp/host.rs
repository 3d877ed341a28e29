//! Calls from wasm to host functions ([`call_host`]). (The way back, a host function calling wasm, is
//! `Caller::call` in `store.rs`, which enters [`super::invoke`] again.)
//!
//! A host function runs with the dispatch loop exited (it may need the whole store) and with the mutator
//! native, so a collection on another thread need not wait for it. Object arguments reach it as handles,
//! rooted in the mutator for the duration of the call; its results are checked against the function type.

use crate::convert::{host_value_fits, raw_to_val, val_to_raw};
use crate::state::{Caller, FuncKind, StoreState};
use crate::types::TypeKind;
use crate::{Ref, Trap, TrapKind, Val, safepoint};

/// Call a host function whose arguments are at absolute slot `base`; results go to `base`.
pub(super) fn call_host(store: &mut StoreState, func: u32, base: usize, caller: Option<u32>) -> Result<(), Trap> {
    let FuncKind::Host(f) = &store.funcs[func as usize].kind else { unreachable!("host function") };
    let f = f.clone();
    let (params, results) = match &store.rt.types.get(store.funcs[func as usize].ty).kind {
        TypeKind::Func { params, results } => (params.clone(), results.clone()),
        _ => unreachable!("functions have function types"),
    };
    // Object arguments become handles, rooted for the call (the host may allocate or call back into wasm)
    // and released when it returns.
    let StoreState { rt, mutator, .. } = &mut *store;
    let args: Vec<Val> = params
        .iter()
        .enumerate()
        .map(|(i, &t)| raw_to_val(&rt.types, &mut mutator.handles, mutator.exec.stack[base + i], t))
        .collect();
    let mut out: Vec<Val> = results.iter().map(|_| Val::I32(0)).collect();
    let saved_sp = store.mutator.exec.sp;
    store.mutator.exec.sp = base + params.len().max(results.len());
    // The mutator is native for the call: a collection on another thread need not wait for the host.
    safepoint::enter_blocking_call(store);
    let r = {
        let mut c = Caller { state: store, instance: caller };
        f(&mut c, &args, &mut out)
    };
    safepoint::leave_blocking_call(store);
    store.mutator.exec.sp = saved_sp;
    let results: Result<Vec<u64>, Trap> = r.and_then(|()| {
        let fits = |(v, &t): (&Val, &crate::types::RtValType)| {
            let raw = val_to_raw(store, *v)?;
            if !host_value_fits(store, v, raw, t) {
                return Err(Trap::new(TrapKind::Host(format!("host function result {v:?} does not match type {t:?}"))));
            }
            Ok(raw)
        };
        out.iter().zip(results.iter()).map(fits).collect()
    });
    for a in &args {
        if let Val::Ref(Ref::Struct(h) | Ref::Array(h) | Ref::Exn(h)) = a {
            store.mutator.handles.remove(*h);
        }
    }
    let results = results?;
    if !store.mutator.exec.stack.grow(base + results.len()) {
        return Err(Trap::new(TrapKind::CallStackExhausted));
    }
    store.mutator.exec.stack[base..base + results.len()].copy_from_slice(&results);
    Ok(())
}
