//! Message passing for user processes: `lwkt::ipc` channels over user
//! buffers, the per-process tables of channels and connections, and the
//! system calls (`wyvern_abi::syscall`, "Messages").
//!
//! # Objects
//!
//! A channel belongs to the process that created it (its `chid` is an index
//! in that process's channel table); a connection (`coid`) is an index in
//! the client's connection table naming a channel, by `Arc`. Both tables are
//! per process, each under its own token: there is no global IPC lock. Each
//! channel is serialized by its own token (a pool token hashed from a serial
//! number). A receive id as user space sees it is `(chid + 1) << 32 |
//! rcvid`, so a reply finds its channel without a search.
//!
//! # Copying
//!
//! [`UserIpc::copy`] copies directly from the sender's pages to the
//! receiver's through the kernel's physical-memory mapping (one copy), page
//! by page, holding both address spaces' tokens: the translation of each
//! side stays valid until the bytes are moved (unmapping takes the token
//! before it frees a frame), and a stack page not yet touched is paged in.
//! A page that is not there, not user-accessible, or (for the destination)
//! not writable fails the copy on that side: the message fails with
//! `Fault` for the party whose buffer it was, and the kernel goes on.
//!
//! The copy runs on the server's thread (receive, reply, read, write); the
//! client's buffers stay valid meanwhile because its record is pinned (the
//! pin rule of `lwkt::ipc`): a client killed while its message is being
//! copied waits for the copy to end before it leaves.
//!
//! # Lifetimes
//!
//! When a process ends, its channels are destroyed (every sender blocked on
//! them fails with `Gone`) and its connections dropped; a channel's memory
//! goes with its last connection.

use alloc::sync::{Arc, Weak};
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use lwkt::ipc::{self, Channel, Delivery, Payload, Pulse, Side};
use wyvern_abi::syscall::{
    Error, Iov, MAX_CHANNELS, MAX_CONNECTIONS, MAX_IOV, MSG_REG_BYTES, MSG_REGS, MsgInfo, USER_TOP,
    chan,
};

use super::account::{Account, Charge, Res, cost};
use super::{UserThread, process, uaccess};
use crate::arch::trap::TrapFrame;
use crate::mm::aspace::AddressSpace;
use crate::mm::{PAGE_SIZE, phys_to_virt};
use crate::sched::X86;
use crate::sync::TokenCell;

/// A message longer than this in all is refused (the receive id's offsets
/// and the copy loop count in `usize`; 1 GiB is more than any program maps).
const MAX_MSG: u64 = 1 << 30;

/// Room for a gather list, in the frame of the system call that reads it
/// ([`IovList::read`]): the list stays there while the call runs, so the
/// [`UserBufs`] that point at it (32 bytes, cheap to move into a send
/// record) stay valid as long as anyone may use them.
pub struct IovList([core::mem::MaybeUninit<Iov>; MAX_IOV as usize]);

impl IovList {
    /// An empty list (not initialized: [`IovList::read`] writes the pieces
    /// a list has, and only those are read).
    pub fn new() -> IovList {
        IovList([const { core::mem::MaybeUninit::uninit() }; MAX_IOV as usize])
    }

    /// Reads the gather list of `n` pieces at user address `ptr` into this
    /// room; every piece must lie below [`USER_TOP`] (its pages are checked
    /// by the copy). The buffers are `space`'s.
    fn read(&mut self, space: &AddressSpace, ptr: u64, n: u64) -> Result<UserBufs, Error> {
        if n > MAX_IOV {
            return Err(Error::Invalid);
        }
        let mut total = 0u64;
        // Piece by piece: most lists have one or two, and a whole-list
        // buffer would cost its initialization every call.
        for (i, slot) in self.0.iter_mut().take(n as usize).enumerate() {
            let mut c = [0u8; 16];
            uaccess::read_into(&mut c, ptr.wrapping_add(16 * i as u64))?;
            let base = u64::from_le_bytes(c[..8].try_into().expect("8 bytes"));
            let len = u64::from_le_bytes(c[8..].try_into().expect("8 bytes"));
            let end = base.checked_add(len).ok_or(Error::Fault)?;
            if len != 0 && end > USER_TOP {
                return Err(Error::Fault);
            }
            total += len;
            if total > MAX_MSG {
                return Err(Error::Invalid);
            }
            slot.write(Iov { base, len });
        }
        Ok(UserBufs {
            space,
            // The first `n` are initialized (above); `UserBufs::iov` reads
            // no more.
            iov: self.0.as_ptr().cast::<Iov>(),
            n: n as usize,
            total: total as usize,
        })
    }
}

/// The message registers of a `MSG_CALL` or `MSG_REPLY_WAIT`, as a
/// buffer the kernel holds in the call's frame: the caller's registers
/// are copied in before and out after, and the other party copies to or
/// from it as from any buffer ([`UserBufs::kernel`]).
pub struct RegBuf {
    words: [u64; MSG_REGS],
    iov: Iov,
}

impl RegBuf {
    /// Registers holding `words`.
    #[inline(always)]
    fn new(words: [u64; MSG_REGS]) -> RegBuf {
        RegBuf {
            words,
            iov: Iov { base: 0, len: 0 },
        }
    }

    /// This room as a party's buffers. It must not move while they are in
    /// use: made and used in one call's frame.
    #[inline(always)]
    fn bufs(&mut self) -> UserBufs {
        self.iov = Iov {
            base: self.words.as_mut_ptr() as u64,
            len: MSG_REG_BYTES,
        };
        UserBufs {
            space: core::ptr::null(),
            iov: &raw const self.iov,
            n: 1,
            total: MSG_REG_BYTES as usize,
        }
    }
}

/// One party's buffers: a gather list in its address space, or the
/// message registers the kernel holds for it ([`RegBuf`]).
#[derive(Clone, Copy)]
pub struct UserBufs {
    /// The owner's address space (null: the one piece is kernel memory, a
    /// [`RegBuf`]) and its gather list (in the owner's system-call frame:
    /// [`IovList`]). Both valid while the owner is inside the call that
    /// passed these buffers (the pin rule keeps it there while another
    /// thread copies).
    space: *const AddressSpace,
    iov: *const Iov,
    n: usize,
    total: usize,
}

// SAFETY: the pointers are only dereferenced while their owner is blocked
// in the call (module docs); `AddressSpace` is `Sync` (its state is under a
// token) and the gather list is not written while the call runs.
unsafe impl Sync for UserBufs {}
// SAFETY: as above.
unsafe impl Send for UserBufs {}

impl UserBufs {
    /// The gather list.
    fn iov(&self) -> &[Iov] {
        // SAFETY: see the field: the first `n` pieces of an `IovList` in the
        // owner's frame, initialized by `IovList::read`, alive while the
        // owner is in its call.
        unsafe { core::slice::from_raw_parts(self.iov, self.n) }
    }

    /// The piece and the offset in it of byte `off`.
    fn seek(&self, mut off: usize) -> (usize, usize) {
        let iov = self.iov();
        let mut i = 0;
        while i < iov.len() && off >= iov[i].len as usize {
            off -= iov[i].len as usize;
            i += 1;
        }
        (i, off)
    }

    /// The owner's address space; `None` for the message registers.
    fn space(&self) -> Option<&AddressSpace> {
        // SAFETY: see the field: the owner is in its call, its space alive.
        unsafe { self.space.as_ref() }
    }

    /// Whether these are message registers (kernel memory: a copy to or
    /// from them needs no token and cannot fault on their side).
    fn kernel(&self) -> bool {
        self.space.is_null()
    }

    /// Where byte `va` of a piece is for the kernel: a user address through
    /// the physical mapping (`None`: not mapped for this access), a kernel
    /// one as it is.
    fn at(&self, va: u64, write: bool) -> Option<*mut u8> {
        match self.space() {
            Some(sp) => sp
                .translate_user(va, write)
                .map(|pa| phys_to_virt(pa).as_mut_ptr::<u8>()),
            None => Some(va as *mut u8),
        }
    }
}

/// Copies between two register buffers: plain kernel memory, nothing to
/// translate, nothing that can fault or block.
#[inline(always)]
fn copy_regs(src: &UserBufs, soff: usize, dst: &UserBufs, doff: usize) -> usize {
    let (sp, dp) = (src.iov()[0].base, dst.iov()[0].base);
    if soff == 0 && doff == 0 && src.total == dst.total {
        // The common case, a whole message or reply: five words.
        // SAFETY: both are `RegBuf`s (`total` is then `MSG_REG_BYTES`, the
        // words' size, and they are aligned) of parties inside their calls
        // (the pin rule), different calls' frames.
        unsafe {
            (dp as *mut [u64; MSG_REGS]).write((sp as *const [u64; MSG_REGS]).read());
        }
        return src.total;
    }
    let n = src
        .total
        .saturating_sub(soff)
        .min(dst.total.saturating_sub(doff));
    if n != 0 {
        // SAFETY: both are `RegBuf`s of parties inside their calls (the pin
        // rule), one piece each of `total` bytes; `n` stays within both.
        // They are different calls' frames, but `copy` allows overlap anyway.
        unsafe {
            core::ptr::copy((sp as *const u8).add(soff), (dp as *mut u8).add(doff), n);
        }
    }
    n
}

/// Who sent a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Who {
    pub pid: u64,
    pub tid: u64,
}

/// The payload of user IPC.
pub struct UserIpc;

impl Payload for UserIpc {
    type Bufs = UserBufs;
    type Who = Who;

    fn len(b: &UserBufs) -> usize {
        b.total
    }

    #[inline(always)]
    fn copy_now(src: &UserBufs, soff: usize, dst: &UserBufs, doff: usize) -> Option<usize> {
        (src.kernel() && dst.kernel()).then(|| copy_regs(src, soff, dst, doff))
    }

    fn copy(src: &UserBufs, soff: usize, dst: &UserBufs, doff: usize) -> Result<usize, Side> {
        let want = src
            .total
            .saturating_sub(soff)
            .min(dst.total.saturating_sub(doff));
        if want == 0 {
            return Ok(0);
        }
        if src.kernel() && dst.kernel() {
            return Ok(copy_regs(src, soff, dst, doff));
        }
        // Both tokens (of the user sides) for the whole copy: taking the
        // second may block and lose the first for a while, so nothing is
        // translated before both are held; from then on nothing here blocks.
        let _ts = src.space().map(|s| lwkt::gettoken::<X86>(s.token()));
        let _td = dst.space().map(|s| lwkt::gettoken::<X86>(s.token()));
        let (siov, diov) = (src.iov(), dst.iov());
        let (mut si, mut so) = src.seek(soff);
        let (mut di, mut dof) = dst.seek(doff);
        let mut done = 0;
        while done < want {
            // Skip empty pieces.
            if so == siov[si].len as usize {
                si += 1;
                so = 0;
                continue;
            }
            if dof == diov[di].len as usize {
                di += 1;
                dof = 0;
                continue;
            }
            let sva = siov[si].base + so as u64;
            let dva = diov[di].base + dof as u64;
            let n = (want - done)
                .min(siov[si].len as usize - so)
                .min(diov[di].len as usize - dof)
                .min((PAGE_SIZE - sva % PAGE_SIZE) as usize)
                .min((PAGE_SIZE - dva % PAGE_SIZE) as usize);
            let sp = src.at(sva, false).ok_or(Side::Src)?;
            let dp = dst.at(dva, true).ok_or(Side::Dst)?;
            // A user side is a frame of a space whose token we hold (none is
            // freed under us), mapped writable by the physical mapping; a
            // kernel side is a `RegBuf` of a party inside its call.
            // SAFETY: so both are valid for `n` bytes (one page, one piece);
            // `copy` allows them to overlap (a process sending to itself).
            unsafe { core::ptr::copy(sp.cast_const(), dp, n) }
            done += n;
            so += n;
            dof += n;
        }
        Ok(done)
    }
}

/// A channel of a user process.
pub struct UChannel {
    chan: Channel<X86, UserIpc>,
    /// Any process may attach to it ([`chan::PUBLIC`]).
    public: bool,
    /// Charged to its creator's account for as long as it exists (its
    /// last connection may outlive the creator).
    _charge: (Charge, Charge),
}

impl UChannel {
    /// Queues a kernel pulse (see `Channel::pulse`; `reserved`: the
    /// source bounds its own pulses, so it is never refused as full).
    ///
    /// Thread context; may block (for the channel's token).
    pub fn pulse(&self, p: Pulse, reserved: bool) -> Result<(), Error> {
        self.chan.pulse(p, reserved).map_err(error)
    }
}

/// A process's channels and connections.
pub struct Tables {
    channels: Table,
    conns: Table,
    /// The highest conversation serial of a channel this process destroyed:
    /// a new channel's serials start above it, so a receive id kept from a
    /// destroyed channel never names a conversation of the channel that
    /// takes its id.
    serial_floor: AtomicU64,
}

/// Serial numbers of channels: the key of each one's pool token.
static SERIAL: AtomicUsize = AtomicUsize::new(1);

/// Whether channels made from now on may take the IPC fast paths (the boot
/// option `ipcfast=off` clears it before any process runs).
pub static FAST_PATHS: AtomicBool = AtomicBool::new(true);

/// Channels alive in the system (created, not yet freed), for leak checks.
pub static LIVE_CHANNELS: AtomicUsize = AtomicUsize::new(0);

impl Drop for UChannel {
    fn drop(&mut self) {
        LIVE_CHANNELS.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Tables {
    /// Empty tables.
    pub const fn new() -> Tables {
        Tables {
            channels: Table::new(),
            conns: Table::new(),
            serial_floor: AtomicU64::new(0),
        }
    }

    /// Destroys every channel and drops every connection: the process ended.
    ///
    /// Thread context; may block.
    pub fn teardown(&self) {
        let chans = self.channels.change(core::mem::take);
        for c in chans.into_iter().flatten() {
            c.chan.chan.destroy();
        }
        drop(self.conns.change(core::mem::take));
    }

    /// Channel `chid` of the process.
    fn channel(&self, chid: u64) -> Result<Arc<UChannel>, Error> {
        self.channels.get(chid).map(|(c, _)| c)
    }

    /// The channel connection `coid` names.
    pub fn conn(&self, coid: u64) -> Result<Arc<UChannel>, Error> {
        self.conns.get(coid).map(|(c, _)| c)
    }
}

/// An entry of a channel or connection table: the channel, and what the
/// entry is charged (a connection's count and memory; a channel's table
/// entry is paid by the channel's own charge).
struct Entry {
    chan: Arc<UChannel>,
    _charge: Option<(Charge, Charge)>,
}

/// A table of channels (by channel or connection id).
struct Table {
    entries: TokenCell<Vec<Option<Entry>>>,
    /// Changes made to `entries` so far, counted under the token with each
    /// change: a look-up made when the count was `n` is still the table's
    /// answer while it is `n` ([`Recent`]).
    changes: AtomicU64,
}

impl Table {
    const fn new() -> Table {
        Table {
            entries: TokenCell::new(Vec::new()),
            changes: AtomicU64::new(0),
        }
    }

    /// Runs `f` on the entries under the token: a change.
    fn change<R>(&self, f: impl FnOnce(&mut Vec<Option<Entry>>) -> R) -> R {
        self.entries.with(|t| {
            let r = f(t);
            self.changes.fetch_add(1, Ordering::Release);
            r
        })
    }

    /// Entry `i`, and the count of changes it is the answer at.
    fn get(&self, i: u64) -> Result<(Arc<UChannel>, u64), Error> {
        self.entries
            .with(|t| {
                let c = t.get(i as usize)?.as_ref()?.chan.clone();
                Some((c, self.changes.load(Ordering::Relaxed)))
            })
            .ok_or(Error::NotFound)
    }

    /// Entry `i` for the calling thread, whose last look-up in this table
    /// is `seen`: that one's answer again when it was of entry `i` and the
    /// table has not changed since (no token, no search), otherwise a
    /// look-up under the token, remembered.
    ///
    /// Thread context, on the thread `seen` belongs to.
    #[inline(always)]
    fn get_recent(&self, seen: &Seen, i: u64) -> Result<Arc<UChannel>, Error> {
        // SAFETY: only its own thread touches a `Seen`, in its own system
        // calls, one at a time; no reference to the value outlives this.
        let last = unsafe { &*seen.0.get() };
        if let Some((id, changes, ref w)) = *last
            && id == i
            && changes == self.changes.load(Ordering::Acquire)
            && let Some(c) = w.upgrade()
        {
            return Ok(c);
        }
        self.get_and_remember(seen, i)
    }

    #[inline(never)]
    fn get_and_remember(&self, seen: &Seen, i: u64) -> Result<Arc<UChannel>, Error> {
        let (c, changes) = self.get(i)?;
        // SAFETY: as in `get_recent`.
        unsafe { *seen.0.get() = Some((i, changes, Arc::downgrade(&c))) };
        Ok(c)
    }
}

/// A thread's last look-up in one of its process's tables: the id, the
/// table's count of changes then, and the channel — by a weak reference,
/// so a channel gone from every table is freed (and its charges returned)
/// whatever threads remember it; only its allocation waits for them.
pub struct Seen(core::cell::UnsafeCell<Option<(u64, u64, Weak<UChannel>)>>);

// SAFETY: only the thread the `Seen` belongs to reads or writes it, in its
// own system calls (`Table::get_recent`); other threads only drop it with
// the thread's user context, when nothing runs on it any more.
unsafe impl Sync for Seen {}

/// A user thread's last look-ups in its process's connection and channel
/// tables ([`Table::get_recent`]): a client that calls one server, a server
/// that serves one channel, finds it without the table's token.
pub struct Recent {
    conn: Seen,
    channel: Seen,
}

impl Recent {
    pub const fn new() -> Recent {
        Recent {
            conn: Seen(core::cell::UnsafeCell::new(None)),
            channel: Seen(core::cell::UnsafeCell::new(None)),
        }
    }
}

/// The caller's connection `coid`. Thread context, on `u`'s thread.
#[inline(always)]
fn own_conn(u: &UserThread, coid: u64) -> Result<Arc<UChannel>, Error> {
    u.process.ipc.conns.get_recent(&u.recent.conn, coid)
}

/// The caller's channel `chid`. Thread context, on `u`'s thread.
#[inline(always)]
fn own_channel(u: &UserThread, chid: u64) -> Result<Arc<UChannel>, Error> {
    u.process.ipc.channels.get_recent(&u.recent.channel, chid)
}

/// Takes entry `i` out of `t`.
fn take(t: &Table, i: u64) -> Result<Arc<UChannel>, Error> {
    t.change(|t| t.get_mut(i as usize).and_then(Option::take))
        .map(|e| e.chan)
        .ok_or(Error::NotFound)
}

/// Puts `v` in the first free slot of `t` (at most `max` slots).
fn insert(t: &mut Vec<Option<Entry>>, v: Entry, max: u64) -> Result<u64, Error> {
    if let Some(i) = t.iter().position(Option::is_none) {
        t[i] = Some(v);
        return Ok(i as u64);
    }
    if t.len() as u64 >= max {
        return Err(Error::Limit);
    }
    t.try_reserve(1).map_err(|_| Error::NoMemory)?;
    t.push(Some(v));
    Ok(t.len() as u64 - 1)
}

/// A connection to `c` for a process of `account`: charged, then put in
/// `table`.
fn add_connection(account: &Arc<Account>, table: &Table, c: Arc<UChannel>) -> Result<u64, Error> {
    let charge = (
        account.charge(Res::Connections, 1)?,
        account.charge(Res::Memory, cost::CONNECTION)?,
    );
    let e = Entry {
        chan: c,
        _charge: Some(charge),
    };
    table.change(|t| insert(t, e, MAX_CONNECTIONS))
}

fn error(e: ipc::Error) -> Error {
    match e {
        ipc::Error::Gone => Error::Gone,
        ipc::Error::Fault => Error::Fault,
        ipc::Error::Interrupted => Error::Killed,
        ipc::Error::Stale => Error::Stale,
        ipc::Error::BadRcvid => Error::NotFound,
        ipc::Error::Full => Error::Full,
        ipc::Error::NoMemory => Error::NoMemory,
        ipc::Error::Peer(c) => Error::ALL
            .into_iter()
            .find(|e| *e as u32 == c)
            .unwrap_or(Error::Invalid),
    }
}

/// `CHANNEL_CREATE`: `flags` are [`chan`] bits.
pub fn channel_create(u: &UserThread, flags: u64) -> Result<u64, Error> {
    if flags & !chan::PUBLIC != 0 {
        return Err(Error::Invalid);
    }
    let account = &u.process.account;
    let charge = (
        account.charge(Res::Channels, 1)?,
        account.charge(Res::Memory, cost::CHANNEL)?,
    );
    let key = SERIAL.fetch_add(1, Ordering::Relaxed) << 6;
    let floor = u.process.ipc.serial_floor.load(Ordering::Relaxed);
    let c = Arc::try_new(UChannel {
        chan: Channel::with_serial(
            lwkt::pool_token(key),
            FAST_PATHS.load(Ordering::Relaxed),
            floor,
        ),
        public: flags & chan::PUBLIC != 0,
        _charge: charge,
    })
    .map_err(|_| Error::NoMemory)?;
    LIVE_CHANNELS.fetch_add(1, Ordering::Relaxed);
    let e = Entry {
        chan: c,
        _charge: None,
    };
    u.process
        .ipc
        .channels
        .change(|t| insert(t, e, MAX_CHANNELS))
}

/// `CHANNEL_DESTROY`.
pub fn channel_destroy(u: &UserThread, chid: u64) -> Result<u64, Error> {
    let c = take(&u.process.ipc.channels, chid)?;
    c.chan.destroy();
    u.process
        .ipc
        .serial_floor
        .fetch_max(c.chan.last_serial(), Ordering::Relaxed);
    Ok(0)
}

/// `CONNECT_ATTACH`: to a channel of the caller's own, of one of its
/// children, a public one, or — the process manager — any. Anything else
/// is [`Error::Denied`], whether the channel exists or not, so probing
/// reveals nothing.
pub fn connect_attach(u: &UserThread, pid: u64, chid: u64) -> Result<u64, Error> {
    let c = if pid == 0 || pid == u.process.pid {
        own_channel(u, chid)?
    } else {
        // A process one may reach learns that a channel is missing; any
        // other gets `Denied` for a missing process, a missing channel and
        // a private one alike.
        let p = process::find(pid).ok_or(Error::Denied)?;
        let related = p.parent() == u.process.pid || u.process.privileged();
        match p.ipc.channel(chid) {
            Ok(c) if related || c.public => c,
            Ok(_) => return Err(Error::Denied),
            Err(e) if related => return Err(e),
            Err(_) => return Err(Error::Denied),
        }
    };
    add_connection(&u.process.account, &u.process.ipc.conns, c)
}

/// `CONNECT_GIVE`: a copy of connection `coid` goes to the sender of the
/// message `rcvid` names (which the caller is serving); returns its id in
/// the sender's table. The sender pays for it: at its limit, the call fails
/// with that limit's error and nothing is given.
pub fn connect_give(u: &UserThread, coid: u64, rcvid: u64) -> Result<u64, Error> {
    let c = own_conn(u, coid)?;
    let (ch, r) = conversation(u, rcvid)?;
    let who = ch.chan.sender_of(r).map_err(error)?;
    let to = process::find(who.pid).ok_or(Error::Stale)?;
    if to.dying() {
        return Err(Error::Stale);
    }
    add_connection(&to.account, &to.ipc.conns, c)
}

/// `CONNECT_DETACH`.
pub fn connect_detach(u: &UserThread, coid: u64) -> Result<u64, Error> {
    drop(take(&u.process.ipc.conns, coid)?);
    Ok(0)
}

/// `MSG_SEND`.
pub fn send(u: &UserThread, a: [u64; 6]) -> Result<u64, Error> {
    let c = own_conn(u, a[0])?;
    let space = &u.process.space;
    let (mut sl, mut rl) = (IovList::new(), IovList::new());
    let smsg = sl.read(space, a[1], a[2])?;
    let rmsg = rl.read(space, a[3], a[4])?;
    let who = Who {
        pid: u.process.pid,
        tid: u.tid,
    };
    c.chan.send(who, smsg, rmsg).map_err(error)
}

/// `MSG_RECEIVE`.
pub fn receive(u: &UserThread, a: [u64; 6]) -> Result<u64, Error> {
    let chid = a[0];
    let c = own_channel(u, chid)?;
    let mut list = IovList::new();
    let buf = receive_args(u, &mut list, a[1], a[2], a[3])?;
    let d = c.chan.receive(&buf, u.base_priority()).map_err(error)?;
    Ok(delivered(d, chid, a[3]))
}

/// A receive's buffers (the list at `ptr`, `n` pieces) and its info
/// pointer, checked before anything is taken off the channel (the info is
/// at most two pages: both ends are probed).
#[inline(always)]
fn receive_args(
    u: &UserThread,
    list: &mut IovList,
    ptr: u64,
    n: u64,
    info: u64,
) -> Result<UserBufs, Error> {
    let buf = list.read(&u.process.space, ptr, n)?;
    uaccess::probe_write(info, core::mem::size_of::<MsgInfo>() as u64)?;
    Ok(buf)
}

/// What a receive on channel `chid` returns for delivery `d`: the user
/// receive id (0 for a pulse), its [`MsgInfo`] written to `info`.
#[inline(always)]
fn delivered(d: Delivery<Who>, chid: u64, info_ptr: u64) -> u64 {
    let (rcvid, info) = match d {
        Delivery::Msg(m) => {
            let rcvid = m.rcvid << CHID_BITS | chid;
            (
                rcvid,
                MsgInfo {
                    rcvid,
                    pid: m.who.pid,
                    tid: m.who.tid,
                    priority: u64::from(m.pri),
                    slen: m.slen as u64,
                    rlen: m.rlen as u64,
                    copied: m.copied as u64,
                    code: 0,
                    value: 0,
                },
            )
        }
        Delivery::Pulse(Pulse {
            code,
            value,
            pri,
            sender,
        }) => (
            0,
            MsgInfo {
                pid: sender,
                priority: u64::from(pri),
                code: u64::from(code),
                value,
                ..MsgInfo::default()
            },
        ),
    };
    // Checked before the receive; if another thread unmapped it since, the
    // rcvid in `rax` still names the conversation.
    let _ = uaccess::write(info_ptr, &info);
    rcvid
}

/// Bits of a user receive id that name the channel (below the channel's
/// own receive id, `lwkt::ipc::RCVID_SLOT_BITS` + `RCVID_SERIAL_BITS` =
/// 57 bits: the whole is positive).
const CHID_BITS: u32 = 6;
const _: () = assert!(MAX_CHANNELS <= 1 << CHID_BITS);
const _: () = assert!(ipc::RCVID_SLOT_BITS + ipc::RCVID_SERIAL_BITS + CHID_BITS <= 63);

/// The channel and the channel's own receive id of a user receive id.
fn conversation(u: &UserThread, rcvid: u64) -> Result<(Arc<UChannel>, u64), Error> {
    let chid = rcvid & ((1 << CHID_BITS) - 1);
    let c = own_channel(u, chid)?;
    Ok((c, rcvid >> CHID_BITS))
}

/// `MSG_REPLY`.
pub fn reply(u: &UserThread, a: [u64; 6]) -> Result<u64, Error> {
    let (c, rcvid) = conversation(u, a[0])?;
    if (a[1] as i64) < 0 {
        return Err(Error::Invalid);
    }
    let mut list = IovList::new();
    let buf = list.read(&u.process.space, a[2], a[3])?;
    c.chan
        .reply(rcvid, a[1], (buf.n > 0).then_some(&buf))
        .map_err(error)?;
    Ok(0)
}

/// `MSG_REPLY_RECEIVE`: `MSG_REPLY` of `a[0]` (unless 0) with status
/// `a[1]` and the first `a[3] & 0xffff_ffff` pieces of the list at `a[2]`,
/// then `MSG_RECEIVE` on channel `a[4]` into the next `a[3] >> 32` pieces,
/// the info to `a[5]`. A failed reply returns at once (nothing received).
///
/// Who may: the owner of both ends, as for the two calls it joins — the
/// receive id must name a conversation on one of the caller's channels and
/// `a[4]` be one of the caller's channels (`NotFound` otherwise). What it
/// costs the kernel: nothing beyond those two calls — the gather lists in
/// this call's frame, a waiting receiver's record on the caller's own
/// kernel stack; the channel's bound on unreplied messages (`Full`) and its
/// receiver queue's allocation (`NoMemory`) refuse as `MSG_RECEIVE` does.
#[inline(always)]
pub fn reply_receive(u: &UserThread, a: [u64; 6]) -> Result<u64, Error> {
    let (nreply, nrecv) = (a[3] & 0xffff_ffff, a[3] >> 32);
    if nreply > MAX_IOV || nrecv > MAX_IOV {
        return Err(Error::Invalid);
    }
    let recv_list = a[2]
        .checked_add(nreply * core::mem::size_of::<Iov>() as u64)
        .ok_or(Error::Fault)?;
    let chid = a[4];
    if a[0] != 0 {
        if a[0] & ((1 << CHID_BITS) - 1) == chid {
            return reply_receive_one(u, a, nreply, recv_list, nrecv);
        }
        reply(u, [a[0], a[1], a[2], nreply, 0, 0])?;
    }
    receive(u, [chid, recv_list, nrecv, a[5], 0, 0])
}

/// `MSG_REPLY_RECEIVE` with both ends on one channel: one look-up, one pass
/// (`Channel::reply_receive`, which hands the CPU straight back to the
/// client when it can).
#[inline(never)]
fn reply_receive_one(
    u: &UserThread,
    a: [u64; 6],
    nreply: u64,
    recv_list: u64,
    nrecv: u64,
) -> Result<u64, Error> {
    // `MSG_REPLY`'s checks, in its order (a shared helper returning the
    // three measured 16 instructions more a round trip).
    let (c, rcvid) = conversation(u, a[0])?;
    if (a[1] as i64) < 0 {
        return Err(Error::Invalid);
    }
    let mut rl = IovList::new();
    let rbuf = rl.read(&u.process.space, a[2], nreply)?;
    let src = (rbuf.n > 0).then_some(&rbuf);
    let mut list = IovList::new();
    let buf = match receive_args(u, &mut list, recv_list, nrecv, a[5]) {
        Ok(b) => b,
        Err(e) => {
            // As the two calls would: the reply stands, the receive fails.
            c.chan.reply(rcvid, a[1], src).map_err(error)?;
            return Err(e);
        }
    };
    let d = c
        .chan
        .reply_receive(rcvid, a[1], src, &buf, u.base_priority())
        .map_err(error)?
        .map_err(error)?;
    Ok(delivered(d, a[4], a[5]))
}

/// The message registers of a system call's frame, in order.
#[inline(always)]
fn regs_in(f: &TrapFrame) -> [u64; MSG_REGS] {
    [f.rsi, f.rdx, f.r10, f.r8, f.r9]
}

/// Puts `w` in the message registers of a system call's frame.
#[inline(always)]
fn regs_out(f: &mut TrapFrame, w: &[u64; MSG_REGS]) {
    (f.rsi, f.rdx, f.r10, f.r8, f.r9) = (w[0], w[1], w[2], w[3], w[4]);
}

/// `MSG_CALL`: `MSG_SEND` of the message registers, the reply into them
/// (`wyvern_abi::syscall`, "Messages in registers").
///
/// Who may: a holder of connection `rdi` (`NotFound` otherwise). What it
/// costs the kernel: the caller's own kernel stack while it waits (its
/// send record and the two register buffers, in this call's frame); the
/// channel's bound on unreplied messages and its queue's allocation refuse
/// as for `MSG_SEND`.
#[inline(always)]
pub fn call(u: &UserThread, f: &mut TrapFrame) -> Result<u64, Error> {
    let c = own_conn(u, f.rdi)?;
    let mut msg = RegBuf::new(regs_in(f));
    let mut reply = RegBuf::new([0; MSG_REGS]);
    let who = Who {
        pid: u.process.pid,
        tid: u.tid,
    };
    let status = c.chan.send(who, msg.bufs(), reply.bufs()).map_err(error)?;
    regs_out(f, &reply.words);
    Ok(status)
}

/// `MSG_REPLY_WAIT`: `MSG_REPLY_RECEIVE` with the reply and the next
/// message in the message registers — reply (unless `r12` is 0) to
/// receive id `r12` with status `r13`, then receive on channel `rdi`.
///
/// Who may, and what it costs: as `MSG_REPLY_RECEIVE` — the owner of both
/// ends (`NotFound` otherwise); a waiting receiver's record and two
/// register buffers on the caller's own kernel stack; `Full` at the
/// channel's bound on unreplied messages, `NoMemory` when its receiver
/// queue cannot grow.
#[inline(always)]
pub fn reply_wait(u: &UserThread, f: &mut TrapFrame) -> Result<u64, Error> {
    let (chid, rcvid, status) = (f.rdi, f.r12, f.r13);
    let mut src = RegBuf::new(regs_in(f));
    let mut buf = RegBuf::new([0; MSG_REGS]);
    let base = u.base_priority();
    let d = if rcvid == 0 {
        let c = own_channel(u, chid)?;
        c.chan.receive(&buf.bufs(), base)
    } else {
        // `MSG_REPLY`'s checks, in its order.
        let (c, r) = conversation(u, rcvid)?;
        if (status as i64) < 0 {
            return Err(Error::Invalid);
        }
        if rcvid & ((1 << CHID_BITS) - 1) == chid {
            c.chan
                .reply_receive(r, status, Some(&src.bufs()), &buf.bufs(), base)
                .map_err(error)?
        } else {
            c.chan.reply(r, status, Some(&src.bufs())).map_err(error)?;
            let c = own_channel(u, chid)?;
            c.chan.receive(&buf.bufs(), base)
        }
    };
    Ok(match d.map_err(error)? {
        Delivery::Msg(m) => {
            regs_out(f, &buf.words);
            (f.rdi, f.r15) = (m.slen as u64, m.rlen as u64);
            (f.r12, f.r13, f.r14) = (m.who.pid, m.who.tid, u64::from(m.pri));
            m.rcvid << CHID_BITS | chid
        }
        Delivery::Pulse(p) => {
            regs_out(f, &[u64::from(p.code), p.value, 0, 0, 0]);
            (f.rdi, f.r15) = (0, 0);
            (f.r12, f.r13, f.r14) = (p.sender, 0, u64::from(p.pri));
            0
        }
    })
}

/// `MSG_ERROR`.
pub fn msg_error(u: &UserThread, rcvid: u64, code: u64) -> Result<u64, Error> {
    let (c, rcvid) = conversation(u, rcvid)?;
    let e = Error::ALL
        .into_iter()
        .find(|e| *e as u64 == code)
        .ok_or(Error::Invalid)?;
    c.chan.error(rcvid, e as u32).map_err(error)?;
    Ok(0)
}

/// `MSG_READ` (`write`: false) and `MSG_WRITE` (true).
pub fn read_write(u: &UserThread, a: [u64; 6], write: bool) -> Result<u64, Error> {
    let (c, rcvid) = conversation(u, a[0])?;
    let off = usize::try_from(a[1]).map_err(|_| Error::Invalid)?;
    let mut list = IovList::new();
    let buf = list.read(&u.process.space, a[2], a[3])?;
    let n = if write {
        c.chan.write(rcvid, off, &buf)
    } else {
        c.chan.read(rcvid, off, &buf)
    };
    n.map(|n| n as u64).map_err(error)
}

/// `MSG_SEND_PULSE`.
pub fn send_pulse(u: &UserThread, coid: u64, code: u64, value: u64) -> Result<u64, Error> {
    let code = u32::try_from(code).map_err(|_| Error::Invalid)?;
    let c = own_conn(u, coid)?;
    let pri = lwkt::current::<X86>().sched_priority();
    c.chan
        .pulse(
            Pulse {
                code,
                value,
                pri,
                sender: u.process.pid,
            },
            false,
        )
        .map_err(error)?;
    Ok(0)
}
