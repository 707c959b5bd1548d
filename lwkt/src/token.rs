//! Serializing tokens (DragonFly's `lwkt_token.c`).
//!
//! A token is held by a *thread*, and only while that thread runs: every
//! switch releases all of the outgoing thread's tokens, and the scheduler
//! reacquires all of the incoming thread's tokens before running it. A thread
//! whose tokens cannot all be had is passed over (a *collision*, counted on
//! the token and on the CPU) for the next runnable thread; after
//! [`crate::switch::SPIN_LOOPS`] failed passes the scheduler takes them in
//! address order, so two threads wanting {A, B} and {B, A} cannot starve each
//! other. Code holding tokens may therefore block; there is no lock order to
//! respect; and the guarantee is: between two points where the holder may
//! block, nobody else holds the token (exclusive) or writes under it
//! (shared). A preempted thread keeps its tokens — its preemptor may not need
//! them.
//!
//! Exclusive acquisition is recursive; a thread holding a token exclusively may
//! also take it shared. Each thread has a stack of [`MAX_TOKENS`] token
//! references, released in reverse order ([`TokenGuard`] enforces it);
//! overflowing it is a panic naming the thread and the token.
//!
//! # Count word
//!
//! `EXCLUSIVE` (bit 0) — held exclusively, `owner` points at the holder's
//! token reference; `EXCLREQ` (bit 1) — an exclusive request is waiting, new
//! shared holders (holding no other token) stand back so it is not starved;
//! the rest counts shared holders in units of `INCR`.
//!
//! # Ranks
//!
//! A token may carry a rank ([`Token::ranked`]). In debug builds taking a
//! ranked token while holding one of equal or higher rank panics with both
//! names: correctness never depends on order, but performance does where two
//! hot tokens are taken together, and the check keeps that order documented
//! and true.

use core::ptr;
use core::sync::atomic::{AtomicU32, Ordering};

use crate::Machine;
use crate::crit::crit_enter;
use crate::sync;
use crate::thread::Thread;

/// Token references a thread may hold at once.
pub const MAX_TOKENS: usize = 16;

const EXCLUSIVE: u64 = 1;
const EXCLREQ: u64 = 2;
const INCR: u64 = 4;

/// A serializing token.
pub struct Token {
    count: sync::AtomicU64,
    owner: sync::AtomicPtr<TokRef>,
    collisions: core::sync::atomic::AtomicU64,
    name: &'static str,
    rank: u8,
}

impl Token {
    /// A free token named `name` (for collision reports).
    #[cfg(not(loom))]
    pub const fn new(name: &'static str) -> Self {
        Token::ranked(name, 0)
    }

    /// A free token of rank `rank` (see the module docs; 0 = unranked).
    #[cfg(not(loom))]
    pub const fn ranked(name: &'static str, rank: u8) -> Self {
        Token {
            count: sync::AtomicU64::new(0),
            owner: sync::AtomicPtr::new(ptr::null_mut()),
            collisions: core::sync::atomic::AtomicU64::new(0),
            name,
            rank,
        }
    }

    /// A free token (loom atomics are not `const`).
    #[cfg(loom)]
    pub fn new(name: &'static str) -> Self {
        Token {
            count: sync::AtomicU64::new(0),
            owner: sync::AtomicPtr::new(ptr::null_mut()),
            collisions: core::sync::atomic::AtomicU64::new(0),
            name,
            rank: 0,
        }
    }

    /// The name.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Times a thread could not get this token at once.
    pub fn collisions(&self) -> u64 {
        self.collisions.load(Ordering::Relaxed)
    }

    /// Whether anyone holds it (a snapshot, for assertions).
    pub fn is_held(&self) -> bool {
        self.count.load(Ordering::Relaxed) & !EXCLREQ != 0
    }

    fn collide(&self) {
        self.collisions.fetch_add(1, Ordering::Relaxed);
    }
}

/// One entry of a thread's token stack. Local to the thread.
pub(crate) struct TokRef {
    tok: core::sync::atomic::AtomicPtr<Token>,
    /// `EXCLUSIVE`/`EXCLREQ` as requested.
    mode: core::sync::atomic::AtomicU64,
}

impl TokRef {
    #[allow(clippy::declare_interior_mutable_const)]
    const EMPTY: TokRef = TokRef {
        tok: core::sync::atomic::AtomicPtr::new(ptr::null_mut()),
        mode: core::sync::atomic::AtomicU64::new(0),
    };

    #[inline(always)]
    fn token(&self) -> &'static Token {
        let p = self.tok.load(Ordering::Relaxed);
        // SAFETY: only `push` stores here, from a `&'static Token`.
        #[allow(unsafe_code)]
        unsafe {
            &*p
        }
    }
}

/// A thread's token references. Local to the thread.
pub struct TokenStack<M: Machine> {
    refs: [TokRef; MAX_TOKENS],
    len: AtomicU32,
    /// When not `NOT_SET`: only the first `have` references are actually held
    /// (a `gettoken` that failed pushed one it does not hold yet); the next
    /// `release_all` releases just those (DragonFly's `td_toks_have`).
    have: AtomicU32,
    _m: core::marker::PhantomData<M>,
}

const NOT_SET: u32 = u32::MAX;

impl<M: Machine> TokenStack<M> {
    #[allow(clippy::declare_interior_mutable_const)]
    pub(crate) const fn new() -> Self {
        TokenStack {
            refs: [TokRef::EMPTY; MAX_TOKENS],
            len: AtomicU32::new(0),
            have: AtomicU32::new(NOT_SET),
            _m: core::marker::PhantomData,
        }
    }

    /// Token references held.
    pub fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed) as usize
    }

    /// Whether the thread holds no token.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn live(&self) -> &[TokRef] {
        &self.refs[..self.len()]
    }

    /// Whether `r` is one of this stack's live references.
    fn owns(&self, r: *const TokRef) -> bool {
        self.live().iter().any(|x| ptr::eq(x, r))
    }
}

/// Tries to take `r.token()` for `td` in mode `mode` (DragonFly's
/// `_lwkt_trytokref`). The uncontended cases — a free token taken
/// exclusively, a token nobody holds exclusively (or asks for) taken shared
/// — are inline, one atomic each; everything else (recursion, an exclusive
/// request pending, a race) is [`try_word`]'s.
#[inline(always)]
fn try_ref<M: Machine>(td: &Thread<M>, r: &TokRef, mode: u64) -> bool {
    let tok = r.token();
    let count = tok.count.load(Ordering::Relaxed);
    if mode & EXCLUSIVE != 0 {
        if count & !EXCLREQ == 0
            && tok
                .count
                .compare_exchange(
                    count,
                    (count & !EXCLREQ) | EXCLUSIVE,
                    Ordering::Acquire,
                    Ordering::Relaxed,
                )
                .is_ok()
        {
            tok.owner
                .store(ptr::from_ref(r).cast_mut(), Ordering::Relaxed);
            return true;
        }
    } else if count & (EXCLUSIVE | EXCLREQ) == 0 {
        if tok.count.fetch_add(INCR, Ordering::Acquire) & EXCLUSIVE == 0 {
            return true;
        }
        // An exclusive holder came in between: undone, and the general
        // protocol decides (as its own failed attempt would).
        tok.count.fetch_sub(INCR, Ordering::Relaxed);
    }
    try_ref_slow(td, r, mode)
}

/// [`try_ref`] beyond its inline cases.
#[inline(never)]
fn try_ref_slow<M: Machine>(td: &Thread<M>, r: &TokRef, mode: u64) -> bool {
    try_word(r, mode, |p| td.tokens.owns(p), td.tokens.len())
}

/// Panics if `td` asks for `r`'s token exclusively while an earlier
/// reference of its own holds it shared (and none exclusively): the
/// exclusive request waits for every shared holder to let go, this thread
/// among them, so it would spin forever (DragonFly forbids the upgrade
/// too). A thread that holds the token exclusively may take it again in
/// any mode (recursion).
#[cold]
#[inline(never)]
fn no_upgrade<M: Machine>(td: &Thread<M>, r: &TokRef, mode: u64) {
    if mode & EXCLUSIVE == 0 {
        return;
    }
    let tok = r.token();
    let mut shared = false;
    for x in td.tokens.live() {
        if ptr::eq(x, r) {
            break;
        }
        if ptr::eq(x.token(), tok) {
            if x.mode.load(Ordering::Relaxed) & EXCLUSIVE != 0 {
                return;
            }
            shared = true;
        }
    }
    assert!(
        !shared,
        "thread `{}` asks for token `{}` exclusively while holding it shared: an upgrade deadlocks",
        td.name().as_str(),
        tok.name()
    );
}

/// The count-word protocol of [`try_ref`]: `mine(p)` says whether token
/// reference `p` belongs to the caller's thread, `held` is how many references
/// that thread has on its stack.
fn try_word(r: &TokRef, mode: u64, mine: impl Fn(*const TokRef) -> bool, held: usize) -> bool {
    let tok = r.token();
    let mut count = tok.count.load(Ordering::Relaxed);
    if mode & EXCLUSIVE != 0 {
        loop {
            let oref = tok.owner.load(Ordering::Relaxed);
            if count & !EXCLREQ == 0 {
                match tok.count.compare_exchange_weak(
                    count,
                    (count & !EXCLREQ) | EXCLUSIVE,
                    Ordering::Acquire,
                    Ordering::Relaxed,
                ) {
                    Ok(_) => {
                        tok.owner
                            .store(ptr::from_ref(r).cast_mut(), Ordering::Relaxed);
                        return true;
                    }
                    Err(c) => count = c,
                }
            } else if count & EXCLUSIVE != 0 && mine(oref) {
                // Recursion: we hold it exclusively through an earlier
                // reference; count this one as shared.
                tok.count.fetch_add(INCR, Ordering::Relaxed);
                r.mode.store(
                    r.mode.load(Ordering::Relaxed) & !EXCLUSIVE,
                    Ordering::Relaxed,
                );
                return true;
            } else {
                if mode & EXCLREQ != 0 && count & EXCLREQ == 0 {
                    tok.count.fetch_or(EXCLREQ, Ordering::Relaxed);
                }
                return false;
            }
        }
    } else {
        loop {
            let oref = tok.owner.load(Ordering::Relaxed);
            // Shared holders stand back for a waiting exclusive request, but
            // only a thread holding no other token (the no-deadlock guarantee
            // needs the others to get through).
            if count & (EXCLUSIVE | (mode & EXCLREQ)) == 0 || (count & EXCLUSIVE == 0 && held != 1)
            {
                if tok.count.fetch_add(INCR, Ordering::Acquire) & EXCLUSIVE == 0 {
                    return true;
                }
                count = tok.count.fetch_sub(INCR, Ordering::Relaxed) - INCR;
            } else if count & EXCLUSIVE != 0 && mine(oref) {
                tok.count.fetch_add(INCR, Ordering::Relaxed);
                return true;
            } else {
                return false;
            }
        }
    }
}

/// Releases `r`'s hold (DragonFly's `_lwkt_reltokref`).
#[inline]
fn rel_ref(r: &TokRef) {
    let tok = r.token();
    if ptr::eq(tok.owner.load(Ordering::Relaxed), r) {
        tok.owner.store(ptr::null_mut(), Ordering::Relaxed);
        tok.count.fetch_and(!EXCLUSIVE, Ordering::Release);
    } else {
        let prev = tok.count.fetch_sub(INCR, Ordering::Release);
        debug_assert!(prev >= INCR, "releasing token {} not held shared", tok.name);
    }
}

/// Releases every token `td` holds, keeping its stack (the switch path).
/// Requires critical section.
///
/// Inlined for the common case, a thread with an empty stack: nothing to
/// release, and `have` is not set (only `wait_for` sets it, with a reference
/// on the stack, and its switch comes here and resets it at once), so
/// nothing to reset either; one load instead of the swap.
#[inline(always)]
pub(crate) fn release_all<M: Machine>(td: &Thread<M>) {
    if td.tokens.len.load(Ordering::Relaxed) == 0 {
        debug_assert_eq!(td.tokens.have.load(Ordering::Relaxed), NOT_SET);
        return;
    }
    release_all_held(td);
}

/// [`release_all`] for a thread with a non-empty stack. Requires critical
/// section.
#[cold]
#[inline(never)]
fn release_all_held<M: Machine>(td: &Thread<M>) {
    let have = td.tokens.have.swap(NOT_SET, Ordering::Relaxed);
    let live = td.tokens.live();
    let held = if have == NOT_SET {
        live.len()
    } else {
        have as usize
    };
    for r in live[..held].iter().rev() {
        rel_ref(r);
    }
}

/// Acquires every token on `td`'s stack, in stack order or (`sorted`) in
/// address order; on failure releases what it got and counts a collision on
/// the token that failed. Requires critical section.
pub(crate) fn get_all<M: Machine>(td: &Thread<M>, sorted: bool) -> bool {
    let live = td.tokens.live();
    let mut order = [0usize; MAX_TOKENS];
    for (i, o) in order.iter_mut().enumerate().take(live.len()) {
        *o = i;
    }
    let order = &mut order[..live.len()];
    if sorted {
        // Stable: recursive references keep their relative order, so the
        // first (exclusive) one is taken first.
        order.sort_by_key(|&i| live[i].tok.load(Ordering::Relaxed) as usize);
    }
    for (n, &i) in order.iter().enumerate() {
        let r = &live[i];
        let mode = r.mode.load(Ordering::Relaxed);
        if !try_ref(td, r, mode) {
            // A refused exclusive request while the token is held shared
            // may be an upgrade, which would be refused for ever: checked
            // here, where a waiting thread is retried, off the
            // acquisition's fast path (and not at all while another thread
            // holds the token exclusively).
            if mode & EXCLUSIVE != 0 && n > 0 {
                let count = r.token().count.load(Ordering::Relaxed);
                if count & EXCLUSIVE == 0 && count >= INCR {
                    no_upgrade(td, r, mode);
                }
            }
            r.token().collide();
            for &j in order[..n].iter().rev() {
                rel_ref(&live[j]);
            }
            return false;
        }
    }
    true
}

/// Holds a token; dropping it releases the token. Guards must be dropped in
/// the reverse order of their acquisition (checked).
#[must_use = "dropping the guard releases the token at once"]
pub struct TokenGuard<M: Machine> {
    tok: &'static Token,
    _not_send: core::marker::PhantomData<(*const (), M)>,
}

#[cold]
#[inline(never)]
fn stack_overflow<M: Machine>(td: &Thread<M>, tok: &Token) -> ! {
    panic!(
        "token stack overflow: thread `{}` holds {MAX_TOKENS} tokens and wants `{}`",
        td.name(),
        tok.name
    )
}

#[inline(always)]
fn push<M: Machine>(td: &'static Thread<M>, tok: &'static Token, mode: u64) -> &'static TokRef {
    let n = td.tokens.len();
    if n >= MAX_TOKENS {
        stack_overflow(td, tok);
    }
    if cfg!(debug_assertions) && tok.rank != 0 {
        for held in td.tokens.live() {
            let h = held.token();
            assert!(
                h.rank == 0 || h.rank < tok.rank || ptr::eq(h, tok),
                "token rank violation: taking `{}` (rank {}) while holding `{}` (rank {})",
                tok.name,
                tok.rank,
                h.name,
                h.rank
            );
        }
    }
    let r = &td.tokens.refs[n];
    r.tok
        .store(ptr::from_ref(tok).cast_mut(), Ordering::Relaxed);
    r.mode.store(mode, Ordering::Relaxed);
    td.tokens.len.store(n as u32 + 1, Ordering::Relaxed);
    r
}

#[inline(always)]
fn acquire<M: Machine>(tok: &'static Token, mode: u64) -> TokenGuard<M> {
    debug_assert!(
        !M::mycpu().in_interrupt(),
        "taking token `{}` in a hard-interrupt handler",
        tok.name
    );
    let g = crit_enter::<M>();
    let td = g.thread();
    let r = push(td, tok, mode);
    if !try_ref(td, r, mode) {
        wait_for(td, tok);
    }
    drop(g);
    TokenGuard {
        tok,
        _not_send: core::marker::PhantomData,
    }
}

/// The reference to `tok` on top of `td`'s stack (the current thread, in
/// a critical section) could not be had at once: the scheduler now takes
/// the token for us, and runs us only once it has. We hold all but this one.
#[inline(never)]
fn wait_for<M: Machine>(td: &'static Thread<M>, tok: &'static Token) {
    td.tokens
        .have
        .store(td.tokens.len() as u32 - 1, Ordering::Relaxed);
    tok.collide();
    M::mycpu().stats.token_collisions.inc();
    td.set_wmesg(tok.name);
    crate::switch::switch::<M>();
    td.set_wmesg("");
}

/// Takes `tok` exclusively, blocking until it is free.
///
/// Thread context, never from a hard interrupt; may block.
pub fn gettoken<M: Machine>(tok: &'static Token) -> TokenGuard<M> {
    acquire(tok, EXCLUSIVE | EXCLREQ)
}

/// Takes `tok` shared, blocking while someone holds it exclusively.
///
/// Thread context, never from a hard interrupt; may block.
pub fn gettoken_shared<M: Machine>(tok: &'static Token) -> TokenGuard<M> {
    acquire(tok, EXCLREQ)
}

/// Takes `tok` exclusively if that is possible without waiting.
///
/// Thread context; never blocks.
pub fn trytoken<M: Machine>(tok: &'static Token) -> Option<TokenGuard<M>> {
    let g = crit_enter::<M>();
    let td = g.thread();
    let r = push(td, tok, EXCLUSIVE | EXCLREQ);
    if try_ref(td, r, EXCLUSIVE) {
        drop(g);
        Some(TokenGuard {
            tok,
            _not_send: core::marker::PhantomData,
        })
    } else {
        td.tokens
            .len
            .store(td.tokens.len() as u32 - 1, Ordering::Relaxed);
        tok.collide();
        drop(g);
        None
    }
}

impl<M: Machine> Drop for TokenGuard<M> {
    #[inline]
    fn drop(&mut self) {
        let g = crit_enter::<M>();
        let td = g.thread();
        let n = td.tokens.len();
        let r = match n.checked_sub(1).map(|i| &td.tokens.refs[i]) {
            Some(r) if ptr::eq(r.token(), self.tok) => r,
            _ => out_of_order(td, self.tok),
        };
        rel_ref(r);
        td.tokens.len.store(n as u32 - 1, Ordering::Relaxed);
        drop(g);
    }
}

/// A guard of `tok` dropped while it is not on top of `td`'s stack.
#[cold]
#[inline(never)]
fn out_of_order<M: Machine>(td: &Thread<M>, tok: &Token) -> ! {
    match td.tokens.live().last() {
        Some(top) => panic!(
            "token `{}` released out of order (top of stack is `{}`)",
            tok.name,
            top.token().name
        ),
        None => panic!("token `{}` released while holding none", tok.name),
    }
}

/// Number of pool tokens.
pub const POOL_TOKENS: usize = 1024;

#[cfg(not(loom))]
static POOL: [Token; POOL_TOKENS] = [const { Token::new("pool") }; POOL_TOKENS];

/// The pool token for `addr`: a token shared by all objects whose address
/// hashes to it, for objects without a token of their own.
#[cfg(not(loom))]
pub fn pool_token(addr: usize) -> &'static Token {
    let h = (addr >> 4).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> (usize::BITS - 10);
    &POOL[h % POOL_TOKENS]
}

/// Loom models of the count-word protocol: acquire, release, and the
/// release-everything-then-reacquire that every switch does.
#[cfg(all(test, loom))]
mod loom_model {
    use loom::cell::UnsafeCell;
    use loom::sync::Arc;
    use loom::thread;

    use super::*;

    fn model(f: impl Fn() + Sync + Send + 'static) {
        let mut b = loom::model::Builder::new();
        b.preemption_bound = Some(3);
        b.check(f);
    }

    /// A token and the data it protects.
    struct Guarded {
        tok: Token,
        data: UnsafeCell<u64>,
    }

    // SAFETY: `data` is only touched while holding `tok` exclusively, which is
    // what the model checks (loom flags any concurrent access to the cell).
    #[allow(unsafe_code)]
    unsafe impl Sync for Guarded {}

    fn tokref(g: &Guarded, mode: u64) -> TokRef {
        let r = TokRef::EMPTY;
        r.tok
            .store(ptr::from_ref(&g.tok).cast_mut(), Ordering::Relaxed);
        r.mode.store(mode, Ordering::Relaxed);
        r
    }

    /// Takes the token through `r`, retrying as the scheduler would.
    fn take(r: &TokRef, mode: u64) {
        while !try_word(r, mode, |p| ptr::eq(p, r), 1) {
            thread::yield_now();
        }
    }

    fn bump(g: &Guarded) {
        g.data.with_mut(|p| {
            // SAFETY: inside the exclusive hold (see `Guarded`).
            #[allow(unsafe_code)]
            unsafe {
                *p += 1
            }
        });
    }

    #[test]
    fn exclusive_holders_exclude_each_other() {
        model(|| {
            let g = Arc::new(Guarded {
                tok: Token::new("model"),
                data: UnsafeCell::new(0),
            });
            let ts: Vec<_> = (0..2)
                .map(|_| {
                    let g = g.clone();
                    thread::spawn(move || {
                        let r = tokref(&g, EXCLUSIVE | EXCLREQ);
                        take(&r, EXCLUSIVE | EXCLREQ);
                        bump(&g);
                        rel_ref(&r);
                    })
                })
                .collect();
            for t in ts {
                t.join().unwrap();
            }
            assert_eq!(
                g.data.with(|p| {
                    // SAFETY: all threads joined.
                    #[allow(unsafe_code)]
                    unsafe {
                        *p
                    }
                }),
                2
            );
            assert!(!g.tok.is_held());
        });
    }

    #[test]
    fn shared_holders_exclude_an_exclusive_one() {
        model(|| {
            let g = Arc::new(Guarded {
                tok: Token::new("model"),
                data: UnsafeCell::new(0),
            });
            let reader = {
                let g = g.clone();
                thread::spawn(move || {
                    let r = tokref(&g, EXCLREQ);
                    take(&r, EXCLREQ);
                    g.data.with(|p| {
                        // SAFETY: a shared hold excludes writers.
                        #[allow(unsafe_code)]
                        unsafe {
                            let _ = *p;
                        }
                    });
                    rel_ref(&r);
                })
            };
            let writer = {
                let g = g.clone();
                thread::spawn(move || {
                    let r = tokref(&g, EXCLUSIVE | EXCLREQ);
                    take(&r, EXCLUSIVE | EXCLREQ);
                    bump(&g);
                    rel_ref(&r);
                })
            };
            reader.join().unwrap();
            writer.join().unwrap();
            assert!(!g.tok.is_held());
        });
    }

    /// A holder that is switched out releases (as `release_all` does) and
    /// reacquires (as `get_all` does) while another thread competes: the data
    /// is never touched by both.
    #[test]
    fn release_on_switch_and_reacquire() {
        model(|| {
            let g = Arc::new(Guarded {
                tok: Token::new("model"),
                data: UnsafeCell::new(0),
            });
            let a = {
                let g = g.clone();
                thread::spawn(move || {
                    let r = tokref(&g, EXCLUSIVE | EXCLREQ);
                    take(&r, EXCLUSIVE | EXCLREQ);
                    bump(&g);
                    rel_ref(&r); // switched out
                    take(&r, EXCLUSIVE | EXCLREQ); // switched back in
                    bump(&g);
                    rel_ref(&r);
                })
            };
            let b = {
                let g = g.clone();
                thread::spawn(move || {
                    let r = tokref(&g, EXCLUSIVE | EXCLREQ);
                    take(&r, EXCLUSIVE | EXCLREQ);
                    bump(&g);
                    rel_ref(&r);
                })
            };
            a.join().unwrap();
            b.join().unwrap();
            assert!(!g.tok.is_held());
        });
    }
}
