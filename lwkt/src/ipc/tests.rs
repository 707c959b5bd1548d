//! Host tests of the IPC core on the simulated machine.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::vec::Vec;

use super::{Channel, Delivery, Error, PULSE_QUEUE, Payload, Pulse, Side};
use crate::sim::{Sim, run};
use crate::tests::wait_until;
use crate::thread::pri;
use crate::{Builder, ThreadRef, Token};

type S = Sim;

/// Memory of the simulated parties: gather lists of shared byte vectors;
/// `bad` buffers fault on every access.
struct Mem;

#[derive(Clone, Default)]
struct Bufs {
    parts: Vec<Arc<Mutex<Vec<u8>>>>,
    bad: bool,
}

fn buf(bytes: &[u8]) -> Bufs {
    Bufs {
        parts: vec![Arc::new(Mutex::new(bytes.to_vec()))],
        bad: false,
    }
}

/// `bytes` split into parts of `chunk` bytes (scatter/gather).
fn gather(bytes: &[u8], chunk: usize) -> Bufs {
    Bufs {
        parts: bytes
            .chunks(chunk.max(1))
            .map(|c| Arc::new(Mutex::new(c.to_vec())))
            .collect(),
        bad: false,
    }
}

fn zeroed(n: usize) -> Bufs {
    buf(&vec![0; n])
}

fn bad() -> Bufs {
    Bufs {
        parts: vec![Arc::new(Mutex::new(vec![0; 8]))],
        bad: true,
    }
}

fn contents(b: &Bufs) -> Vec<u8> {
    b.parts
        .iter()
        .flat_map(|p| p.lock().unwrap().clone())
        .collect()
}

impl Payload for Mem {
    type Bufs = Bufs;
    type Who = u32;

    fn len(b: &Bufs) -> usize {
        b.parts.iter().map(|p| p.lock().unwrap().len()).sum()
    }

    fn copy(src: &Bufs, soff: usize, dst: &Bufs, doff: usize) -> Result<usize, Side> {
        if src.bad {
            return Err(Side::Src);
        }
        if dst.bad {
            return Err(Side::Dst);
        }
        let from = contents(src);
        let from = from.get(soff..).unwrap_or(&[]);
        let mut at = 0usize;
        let mut n = 0;
        for p in &dst.parts {
            let mut p = p.lock().unwrap();
            for b in p.iter_mut() {
                if at >= doff {
                    if n == from.len() {
                        return Ok(n);
                    }
                    *b = from[n];
                    n += 1;
                }
                at += 1;
            }
        }
        Ok(n)
    }

    /// Small good buffers copy at once, as the kernel's message registers
    /// do: the reply then stays in one token pass.
    fn copy_now(src: &Bufs, soff: usize, dst: &Bufs, doff: usize) -> Option<usize> {
        let small = |b: &Bufs| !b.bad && Self::len(b) <= SMALL;
        if !(small(src) && small(dst)) {
            return None;
        }
        Some(Self::copy(src, soff, dst, doff).expect("good buffers copy"))
    }
}

/// Buffers up to this size copy at once ([`Payload::copy_now`]).
const SMALL: usize = 40;

type Chan = Channel<S, Mem>;

fn channel(fast: bool) -> &'static Chan {
    let token: &'static Token = Box::leak(Box::new(Token::new("chan")));
    Box::leak(Box::new(Channel::new(token, fast)))
}

/// A server that answers every message with its bytes reversed and status
/// = its length, and counts pulses, until it gets pulse code 0.
/// What a server saw: who sent and the bytes.
type Log = Arc<Mutex<Vec<(u32, Vec<u8>)>>>;

fn echo_server(ch: &'static Chan, log: Log) {
    serve_echo(ch, log, false);
}

/// The echo server; `rr`: written as a server loop, each reply and the next
/// receive one [`Channel::reply_receive`] (otherwise a `reply`, then a
/// `receive`).
fn serve_echo(ch: &'static Chan, log: Log, rr: bool) {
    let into = zeroed(4096);
    let mut next = ch.receive(&into, pri::KERN_DAEMON);
    loop {
        match next {
            Ok(Delivery::Msg(m)) => {
                let mut got = contents(&into);
                got.truncate(m.copied);
                assert_eq!(m.copied, m.slen.min(4096));
                log.lock().unwrap().push((m.who, got.clone()));
                got.reverse();
                let (status, answer) = (got.len() as u64, buf(&got));
                next = if rr {
                    ch.reply_receive(m.rcvid, status, Some(&answer), &into, pri::KERN_DAEMON)
                        .expect("the reply")
                } else {
                    ch.reply(m.rcvid, status, Some(&answer)).unwrap();
                    ch.receive(&into, pri::KERN_DAEMON)
                };
            }
            Ok(Delivery::Pulse(p)) if p.code == 0 => return,
            Ok(Delivery::Pulse(p)) => {
                log.lock().unwrap().push((p.code, Vec::new()));
                next = ch.receive(&into, pri::KERN_DAEMON);
            }
            Err(e) => panic!("receive failed: {e:?}"),
        }
    }
}

fn message(who: u32, n: usize) -> Vec<u8> {
    (0..(n * 7 + who as usize) % 300)
        .map(|i| (i as u32 * 31 + who * 7 + n as u32) as u8)
        .collect()
}

/// Sends `count` messages (some as gather lists) and checks every reply.
fn client(ch: &'static Chan, who: u32, count: usize) -> Vec<(u64, Vec<u8>)> {
    let mut out = Vec::new();
    for n in 0..count {
        let m = message(who, n);
        let smsg = if n % 3 == 0 { gather(&m, 7) } else { buf(&m) };
        let reply = gather(&vec![0; 300], 50);
        let status = ch.send(who, smsg, reply.clone()).unwrap();
        let mut want = m.clone();
        want.reverse();
        let got = contents(&reply);
        assert_eq!(status, m.len() as u64);
        assert_eq!(&got[..m.len()], &want[..]);
        out.push((status, got));
    }
    out
}

/// Many clients on every CPU, one server thread per CPU on one channel:
/// every reply is the right one.
#[test]
fn round_trips_across_cpus() {
    for ncpus in [1, 2, 4] {
        run(
            ncpus,
            Some(std::time::Duration::from_millis(1)),
            move || {
                let ch = channel(true);
                let log = Arc::new(Mutex::new(Vec::new()));
                let servers: Vec<_> = (0..ncpus)
                    .map(|c| {
                        let log = log.clone();
                        Builder::new("server")
                            .cpu(c)
                            .spawn::<S>(move || echo_server(ch, log))
                            .unwrap()
                    })
                    .collect();
                let clients: Vec<_> = (0..ncpus * 2)
                    .map(|i| {
                        Builder::new("client")
                            .cpu(i % ncpus)
                            .spawn::<S>(move || {
                                client(ch, i as u32, 60);
                            })
                            .unwrap()
                    })
                    .collect();
                for c in &clients {
                    c.join();
                }
                for _ in 0..ncpus {
                    ch.pulse(
                        Pulse {
                            code: 0,
                            value: 0,
                            pri: 0,
                            sender: 0,
                        },
                        false,
                    )
                    .unwrap();
                }
                for s in &servers {
                    s.join();
                }
                let st = ch.stats();
                assert_eq!(st.sends, ncpus as u64 * 2 * 60);
                assert_eq!(st.replies, st.sends);
                assert_eq!(log.lock().unwrap().len() as u64, st.sends);
                if ncpus == 1 {
                    assert!(st.fast > 0, "no fast path on one CPU: {st:?}");
                }
            },
        );
    }
}

/// What one conversation produced, for comparing the two paths.
#[derive(Debug, PartialEq)]
struct Outcome {
    client: Vec<(u64, Vec<u8>)>,
    server: Vec<(u32, Vec<u8>)>,
    sends: u64,
    replies: u64,
    fast: u64,
    fast_replies: u64,
    handoffs: u64,
}

/// One client's conversation with an echo server on one CPU; `fast`: the
/// channel's fast paths on; `rr`: the server replies and receives in one
/// call.
fn conversation(fast: bool, rr: bool) -> Outcome {
    run(1, None, move || {
        let ch = channel(fast);
        let log = Arc::new(Mutex::new(Vec::new()));
        let l = log.clone();
        let server = Builder::new("server")
            .spawn::<S>(move || serve_echo(ch, l, rr))
            .unwrap();
        // Let the server reach its receive, so the client finds it waiting.
        crate::yield_now::<S>();
        let handoffs0 = crate::sim::this_machine().cpus[0].stats.handoffs.get();
        let out = Arc::new(Mutex::new(Vec::new()));
        let o = out.clone();
        let c = Builder::new("client")
            .spawn::<S>(move || {
                let r = client(ch, 7, 100);
                *o.lock().unwrap() = r;
                ch.pulse(
                    Pulse {
                        code: 9,
                        value: 1,
                        pri: 0,
                        sender: 0,
                    },
                    false,
                )
                .unwrap();
            })
            .unwrap();
        c.join();
        ch.pulse(
            Pulse {
                code: 0,
                value: 0,
                pri: 0,
                sender: 0,
            },
            false,
        )
        .unwrap();
        server.join();
        let st = ch.stats();
        let server_log = log.lock().unwrap().clone();
        let client_log = out.lock().unwrap().clone();
        Outcome {
            client: client_log,
            server: server_log,
            sends: st.sends,
            replies: st.replies,
            fast: st.fast,
            fast_replies: st.fast_replies,
            handoffs: crate::sim::this_machine().cpus[0].stats.handoffs.get() - handoffs0,
        }
    })
}

/// The fast paths and the general path give the same result: the same
/// replies to the client, the same messages and pulses to the server in the
/// same order, the same counts — and each fast path really ran where it
/// applies and never otherwise: the send's (a waiting receiver) and the
/// reply-and-receive's (a client to hand back to).
#[test]
fn fast_and_slow_paths_agree() {
    let slow = conversation(false, false);
    assert_eq!((slow.fast, slow.fast_replies, slow.handoffs), (0, 0, 0));
    let same = |o: &Outcome| Outcome {
        fast: 0,
        fast_replies: 0,
        handoffs: 0,
        client: o.client.clone(),
        server: o.server.clone(),
        ..*o
    };
    for (fast, rr) in [(true, false), (false, true), (true, true)] {
        let o = conversation(fast, rr);
        let (sends, replies) = if fast {
            (100, 100 * u64::from(rr))
        } else {
            (0, 0)
        };
        assert_eq!(o.fast, sends, "fast sends, fast {fast}, rr {rr}");
        assert_eq!(
            o.fast_replies, replies,
            "fast replies, fast {fast}, rr {rr}"
        );
        assert_eq!(o.handoffs, sends + replies, "fast {fast}, rr {rr}");
        assert_eq!(same(&o), same(&slow), "fast {fast}, rr {rr}");
    }
}

/// Pulses come out in the order sent; a full queue refuses a user pulse
/// (counted) but never the kernel's reserved ones.
#[test]
fn pulses_are_ordered_and_overflow_is_refused() {
    run(1, None, || {
        let ch = channel(true);
        for i in 0..PULSE_QUEUE as u32 {
            ch.pulse(
                Pulse {
                    code: i + 1,
                    value: u64::from(i) * 3,
                    pri: 5,
                    sender: 0,
                },
                false,
            )
            .unwrap();
        }
        let over = Pulse {
            code: 999,
            value: 0,
            pri: 5,
            sender: 0,
        };
        assert_eq!(ch.pulse(over, false), Err(Error::Full));
        assert_eq!(ch.stats().overflows, 1);
        ch.pulse(
            Pulse {
                code: 1000,
                value: 7,
                pri: 5,
                sender: 0,
            },
            true,
        )
        .unwrap();
        let into = zeroed(16);
        for i in 0..PULSE_QUEUE as u32 {
            match ch.receive(&into, pri::KERN_DAEMON).unwrap() {
                Delivery::Pulse(p) => {
                    assert_eq!((p.code, p.value), (i + 1, u64::from(i) * 3));
                }
                other => panic!("expected a pulse, got {other:?}"),
            }
        }
        assert_eq!(
            ch.receive(&into, pri::KERN_DAEMON).unwrap(),
            Delivery::Pulse(Pulse {
                code: 1000,
                value: 7,
                pri: 5,
                sender: 0,
            })
        );
        // A pulse reaches a waiting receiver directly.
        let r = Builder::new("receiver")
            .spawn::<S>(move || {
                let into = zeroed(16);
                assert!(matches!(
                    ch.receive(&into, pri::KERN_DAEMON),
                    Ok(Delivery::Pulse(Pulse { code: 42, .. }))
                ));
            })
            .unwrap();
        crate::yield_now::<S>();
        ch.pulse(
            Pulse {
                code: 42,
                value: 0,
                pri: 5,
                sender: 0,
            },
            false,
        )
        .unwrap();
        r.join();
    });
}

/// Spawns a thread at `p` that sends `who` and records the reply status.
fn sender_at(ch: &'static Chan, p: u8, who: u32, out: Arc<Mutex<Vec<u32>>>) -> ThreadRef<S> {
    Builder::new("sender")
        .priority(p)
        .spawn::<S>(move || {
            let r = ch.send(who, buf(&[who as u8]), zeroed(0));
            assert_eq!(r, Ok(u64::from(who)));
            out.lock().unwrap().push(who);
        })
        .unwrap()
}

/// Queued senders are received highest priority first, in arrival order
/// within a priority, and a pulse goes before senders of its priority or
/// lower; the receiver runs at each sender's priority, and at its own
/// while it waits.
#[test]
fn receive_order_and_priority_inheritance() {
    run(1, None, || {
        let ch = channel(true);
        let done = Arc::new(Mutex::new(Vec::new()));
        let senders: Vec<_> = [(10u8, 1u32), (14, 2), (10, 3), (14, 4), (6, 5)]
            .into_iter()
            .map(|(p, who)| sender_at(ch, p, who, done.clone()))
            .collect();
        // They run (higher priorities than ours) and queue.
        crate::yield_now::<S>();
        crate::setpri_self::<S>(2);
        crate::yield_now::<S>();
        crate::setpri_self::<S>(pri::KERN_DAEMON);
        ch.pulse(
            Pulse {
                code: 77,
                value: 0,
                pri: 10,
                sender: 0,
            },
            false,
        )
        .unwrap();
        let into = zeroed(8);
        let mut order = Vec::new();
        for _ in 0..6 {
            match ch.receive(&into, 3).unwrap() {
                Delivery::Msg(m) => {
                    assert_eq!(crate::current::<S>().priority(), m.pri);
                    order.push((m.who, m.pri));
                    ch.reply(m.rcvid, u64::from(m.who), None).unwrap();
                }
                Delivery::Pulse(p) => {
                    assert_eq!(crate::current::<S>().priority(), 10);
                    order.push((p.code, p.pri));
                }
            }
        }
        assert_eq!(
            order,
            vec![(2, 14), (4, 14), (77, 10), (1, 10), (3, 10), (5, 6)]
        );
        for s in &senders {
            s.join();
        }
        // Waiting again: at the base priority passed in.
        let r = Builder::new("lowserver")
            .priority(pri::KERN_DAEMON)
            .spawn::<S>(move || {
                let into = zeroed(8);
                let m = ch.receive(&into, 3);
                assert!(matches!(m, Ok(Delivery::Pulse(_))));
            })
            .unwrap();
        crate::yield_now::<S>();
        assert_eq!(r.priority(), 3);
        ch.pulse(
            Pulse {
                code: 1,
                value: 0,
                pri: 3,
                sender: 0,
            },
            false,
        )
        .unwrap();
        r.join();
    });
}

/// A sender that has to queue raises the thread serving the channel to its
/// priority: a server serving a low-priority client, starved by a spinning
/// middle-priority thread, is raised when a high-priority client waits, and
/// finishes both. (Without the raise the server would never run again: the
/// spinner gives up after a while and says so.)
#[test]
fn queued_sender_raises_the_busy_server() {
    run(1, Some(std::time::Duration::from_millis(1)), || {
        let ch = channel(true);
        let served_at = Arc::new(Mutex::new(Vec::new()));
        let sa = served_at.clone();
        let server = Builder::new("server")
            .spawn::<S>(move || {
                for _ in 0..2 {
                    let into = zeroed(8);
                    let Ok(Delivery::Msg(m)) = ch.receive(&into, pri::KERN_DAEMON) else {
                        panic!("expected a message");
                    };
                    if m.who == 1 {
                        // The low client's work lasts until another client queues.
                        while ch.queues().0 == 0 {
                            crate::yield_now::<S>();
                            crate::sim::poll();
                        }
                    }
                    sa.lock()
                        .unwrap()
                        .push((m.who, crate::current::<S>().priority()));
                    ch.reply(m.rcvid, 0, None).unwrap();
                }
            })
            .unwrap();
        crate::yield_now::<S>();
        let low = Builder::new("low")
            .priority(4)
            .spawn::<S>(move || {
                ch.send(1, buf(b"low"), zeroed(0)).unwrap();
            })
            .unwrap();
        // Sleep: the low client sends, the server takes it at priority 4.
        crate::tsleep::<S>(0x1234, 0, "let-low", 2);
        assert_eq!(server.priority(), 4);
        let stop = Arc::new(AtomicBool::new(false));
        let starved = Arc::new(AtomicBool::new(false));
        let (st, sv) = (stop.clone(), starved.clone());
        let middle = Builder::new("middle")
            .priority(10)
            .spawn::<S>(move || {
                let mut n = 0u64;
                while !st.load(Ordering::SeqCst) {
                    n += 1;
                    if n == 200_000 {
                        sv.store(true, Ordering::SeqCst);
                        return;
                    }
                    crate::yield_now::<S>();
                    crate::sim::poll();
                }
            })
            .unwrap();
        let high = Builder::new("high")
            .priority(20)
            .spawn::<S>(move || {
                ch.send(2, buf(b"high"), zeroed(0)).unwrap();
            })
            .unwrap();
        high.join();
        stop.store(true, Ordering::SeqCst);
        low.join();
        middle.join();
        server.join();
        assert!(!starved.load(Ordering::SeqCst), "the server was starved");
        let got = served_at.lock().unwrap().clone();
        assert_eq!(got, vec![(1, 20), (2, 20)], "server priorities {got:?}");
    });
}

/// Destroying a channel releases queued senders, reply-blocked senders and
/// waiting receivers with `Gone`; everything after fails the same way.
#[test]
fn destroy_releases_everyone() {
    run(2, Some(std::time::Duration::from_millis(1)), || {
        let ch = channel(true);
        let gone = Arc::new(AtomicUsize::new(0));
        let senders: Vec<_> = (0..4u32)
            .map(|i| {
                let g = gone.clone();
                Builder::new("sender")
                    .cpu(i as usize % 2)
                    .spawn::<S>(move || {
                        assert_eq!(ch.send(i, buf(b"x"), zeroed(4)), Err(Error::Gone));
                        g.fetch_add(1, Ordering::SeqCst);
                    })
                    .unwrap()
            })
            .collect();
        while ch.stats().sends < 4 {
            crate::yield_now::<S>();
            crate::sim::poll();
        }
        // One of them received (reply-blocked), the rest queued.
        let into = zeroed(8);
        let Ok(Delivery::Msg(m)) = ch.receive(&into, pri::KERN_DAEMON) else {
            panic!("expected a message");
        };
        let other = channel(true);
        let receivers: Vec<_> = (0..2)
            .map(|c| {
                let g = gone.clone();
                Builder::new("receiver")
                    .cpu(c)
                    .spawn::<S>(move || {
                        let into = zeroed(8);
                        assert_eq!(other.receive(&into, pri::KERN_DAEMON), Err(Error::Gone));
                        g.fetch_add(1, Ordering::SeqCst);
                    })
                    .unwrap()
            })
            .collect();
        ch.destroy();
        assert_eq!(ch.reply(m.rcvid, 0, None), Err(Error::Stale));
        for s in &senders {
            s.join();
        }
        assert_eq!(gone.load(Ordering::SeqCst), 4);
        while gone.load(Ordering::SeqCst) == 4 && receivers.iter().any(|r| !r.has_exited()) {
            other.destroy();
            crate::yield_now::<S>();
            crate::sim::poll();
        }
        for r in &receivers {
            r.join();
        }
        assert_eq!(gone.load(Ordering::SeqCst), 6);
        assert_eq!(ch.send(9, buf(b"x"), zeroed(0)), Err(Error::Gone));
        assert_eq!(ch.receive(&into, 0), Err(Error::Gone));
        assert_eq!(
            ch.pulse(
                Pulse {
                    code: 1,
                    value: 0,
                    pri: 0,
                    sender: 0,
                },
                false
            ),
            Err(Error::Gone)
        );
    });
}

/// Bad buffers fail only their owner: a bad send buffer fails that send and
/// the server gets the next message; a bad receive buffer fails the receive
/// and leaves the message queued; a bad reply source fails the reply and
/// leaves the sender blocked; a bad reply buffer fails the sender.
#[test]
fn bad_buffers_fail_only_their_owner() {
    run(1, None, || {
        let ch = channel(true);
        let a = Builder::new("bad-send")
            .spawn::<S>(move || {
                assert_eq!(ch.send(1, bad(), zeroed(4)), Err(Error::Fault));
            })
            .unwrap();
        let b = Builder::new("good")
            .spawn::<S>(move || {
                let reply = zeroed(4);
                assert_eq!(ch.send(2, buf(b"good"), reply.clone()), Ok(5));
                assert_eq!(contents(&reply), b"okay");
            })
            .unwrap();
        let c = Builder::new("bad-reply-buffer")
            .spawn::<S>(move || {
                assert_eq!(ch.send(3, buf(b"third"), bad()), Err(Error::Fault));
            })
            .unwrap();
        crate::yield_now::<S>();
        assert_eq!(ch.receive(&bad(), 0), Err(Error::Fault));
        let into = zeroed(8);
        let Ok(Delivery::Msg(m)) = ch.receive(&into, 0) else {
            panic!("expected a message");
        };
        assert_eq!((m.who, &contents(&into)[..4]), (2, &b"good"[..]));
        assert_eq!(ch.reply(m.rcvid, 5, Some(&bad())), Err(Error::Fault));
        assert_eq!(ch.read(m.rcvid, 1, &into), Ok(3));
        assert_eq!(&contents(&into)[..3], b"ood");
        assert_eq!(ch.write(m.rcvid, 0, &buf(b"ok")), Ok(2));
        assert_eq!(ch.write(m.rcvid, 2, &buf(b"ay!")), Ok(2));
        ch.reply(m.rcvid, 5, None).unwrap();
        assert_eq!(ch.reply(m.rcvid, 5, None), Err(Error::Stale));
        assert_eq!(ch.reply(0x7fff_0000, 5, None), Err(Error::BadRcvid));
        let Ok(Delivery::Msg(m)) = ch.receive(&into, 0) else {
            panic!("expected a message");
        };
        assert_eq!(m.who, 3);
        assert_eq!(ch.reply(m.rcvid, 1, Some(&buf(b"x"))), Ok(()));
        for t in [a, b, c] {
            t.join();
        }
        assert_eq!(ch.stats().sends, 3);
    });
}

/// An interrupted sender leaves the queue, or the reply table (the reply
/// then finds the rcvid stale); an interrupted receiver leaves its queue.
#[test]
fn interrupted_parties_leave_cleanly() {
    run(2, Some(std::time::Duration::from_millis(1)), || {
        let ch = channel(true);
        let queued = Builder::new("queued")
            .cpu(1)
            .spawn::<S>(move || {
                assert_eq!(ch.send(1, buf(b"a"), zeroed(0)), Err(Error::Interrupted));
            })
            .unwrap();
        while ch.stats().sends < 1 {
            crate::yield_now::<S>();
            crate::sim::poll();
        }
        crate::interrupt::<S>(&queued);
        queued.join();
        let served = Builder::new("served")
            .cpu(1)
            .spawn::<S>(move || {
                assert_eq!(ch.send(2, buf(b"b"), zeroed(0)), Err(Error::Interrupted));
            })
            .unwrap();
        let into = zeroed(8);
        let Ok(Delivery::Msg(m)) = ch.receive(&into, 0) else {
            panic!("expected a message");
        };
        assert_eq!(m.who, 2, "the interrupted sender's message was left queued");
        crate::interrupt::<S>(&served);
        served.join();
        assert_eq!(ch.reply(m.rcvid, 0, None), Err(Error::Stale));
        let waiting = Arc::new(AtomicBool::new(false));
        let w = waiting.clone();
        let receiver = Builder::new("receiver")
            .cpu(1)
            .spawn::<S>(move || {
                w.store(true, Ordering::SeqCst);
                let into = zeroed(8);
                assert_eq!(ch.receive(&into, 0), Err(Error::Interrupted));
            })
            .unwrap();
        while !waiting.load(Ordering::SeqCst) {
            crate::yield_now::<S>();
            crate::sim::poll();
        }
        crate::tsleep::<S>(0x5151, 0, "settle", 2);
        crate::interrupt::<S>(&receiver);
        receiver.join();
        // Nothing is left behind: a new conversation works.
        let c = Builder::new("after")
            .cpu(1)
            .spawn::<S>(move || {
                assert_eq!(ch.send(3, buf(b"c"), zeroed(0)), Ok(3));
            })
            .unwrap();
        let Ok(Delivery::Msg(m)) = ch.receive(&into, 0) else {
            panic!("expected a message");
        };
        assert_eq!(m.who, 3);
        ch.reply(m.rcvid, 3, None).unwrap();
        c.join();
    });
}

/// Clients on every CPU interrupted at random moments while servers on
/// every CPU serve them: every send ends (replied or interrupted), every
/// reply reaches a live sender or is refused as stale, nothing hangs.
#[test]
fn interrupts_at_random_lose_nothing() {
    run(4, Some(std::time::Duration::from_millis(1)), || {
        let ch = channel(true);
        let replied = Arc::new(AtomicU64::new(0));
        let ok = Arc::new(AtomicU64::new(0));
        let servers: Vec<_> = (0..4)
            .map(|c| {
                let replied = replied.clone();
                Builder::new("server")
                    .cpu(c)
                    .spawn::<S>(move || {
                        // Until its pulse: each server takes exactly one.
                        // Half the servers reply and receive in one call.
                        let into = zeroed(64);
                        let mut next = ch.receive(&into, pri::KERN_DAEMON);
                        loop {
                            match next {
                                Ok(Delivery::Msg(m)) if c % 2 == 0 => {
                                    let r = ch.reply_receive(
                                        m.rcvid,
                                        1,
                                        Some(&buf(b"r")),
                                        &into,
                                        pri::KERN_DAEMON,
                                    );
                                    next = match r {
                                        Ok(n) => {
                                            replied.fetch_add(1, Ordering::SeqCst);
                                            n
                                        }
                                        Err(_) => ch.receive(&into, pri::KERN_DAEMON),
                                    };
                                }
                                Ok(Delivery::Msg(m)) => {
                                    if ch.reply(m.rcvid, 1, Some(&buf(b"r"))).is_ok() {
                                        replied.fetch_add(1, Ordering::SeqCst);
                                    }
                                    next = ch.receive(&into, pri::KERN_DAEMON);
                                }
                                Ok(Delivery::Pulse(_)) => return,
                                Err(e) => panic!("receive: {e:?}"),
                            }
                        }
                    })
                    .unwrap()
            })
            .collect();
        for round in 0..20u32 {
            let clients: Vec<_> = (0..8u32)
                .map(|i| {
                    let ok = ok.clone();
                    Builder::new("client")
                        .cpu(i as usize % 4)
                        .spawn::<S>(move || {
                            loop {
                                match ch.send(i, buf(&[round as u8; 16]), zeroed(1)) {
                                    Ok(1) => {
                                        ok.fetch_add(1, Ordering::SeqCst);
                                    }
                                    Err(Error::Interrupted) => return,
                                    other => panic!("send: {other:?}"),
                                }
                            }
                        })
                        .unwrap()
                })
                .collect();
            for _ in 0..(round % 5 + 1) {
                crate::yield_now::<S>();
                crate::sim::poll();
            }
            for c in &clients {
                crate::interrupt::<S>(c);
            }
            for c in &clients {
                c.join();
            }
        }
        for _ in 0..4 {
            ch.pulse(
                Pulse {
                    code: 0,
                    value: 0,
                    pri: 0,
                    sender: 0,
                },
                false,
            )
            .unwrap();
        }
        for s in &servers {
            s.join();
        }
        assert_eq!(replied.load(Ordering::SeqCst), ok.load(Ordering::SeqCst));
        assert_eq!(ch.queues(), (0, 0, 0, 0), "left behind");
    });
}

/// A receive id kept after its conversation ended stays stale however many
/// conversations follow on the same slot (the reply table reuses its slots
/// last-in first-out, so every one of these takes the slot the first had):
/// 40,000 is more than a 15-bit generation could tell apart. A channel made
/// in the place of a destroyed one (`with_serial`) gives none of the old
/// one's receive ids again.
#[test]
fn stale_receive_ids_stay_stale() {
    const N: u64 = 40_000;
    run(1, None, || {
        let ch = channel(true);
        let client = Builder::new("client")
            .spawn::<S>(move || {
                for i in 0..=N {
                    assert_eq!(ch.send(i as u32, buf(b"x"), zeroed(0)), Ok(i));
                }
            })
            .unwrap();
        let into = zeroed(1);
        let mut first = None;
        for i in 0..=N {
            let Ok(Delivery::Msg(m)) = ch.receive(&into, 0) else {
                panic!("expected a message");
            };
            if let Some(old) = first {
                assert_ne!(m.rcvid, old, "conversation {i} reused an old rcvid");
            }
            ch.reply(m.rcvid, i, None).unwrap();
            let old = *first.get_or_insert(m.rcvid);
            assert_eq!(ch.reply(old, 0, None), Err(Error::Stale));
        }
        client.join();
        let last = ch.last_serial();
        assert_eq!(last, N + 1);
        let next: &'static Chan = Box::leak(Box::new(Chan::with_serial(
            crate::token::pool_token(0x1234_5670),
            true,
            last,
        )));
        let c2 = Builder::new("client2")
            .spawn::<S>(move || {
                assert_eq!(next.send(1, buf(b"y"), zeroed(0)), Ok(0));
            })
            .unwrap();
        let Ok(Delivery::Msg(m)) = next.receive(&into, 0) else {
            panic!("expected a message");
        };
        assert!(m.rcvid >> crate::ipc::RCVID_SLOT_BITS > last);
        next.reply(m.rcvid, 0, None).unwrap();
        c2.join();
    });
}

/// What a [`receiver`] got, once its receive returned.
type Got = Arc<Mutex<Option<Result<Delivery<u32>, Error>>>>;

/// A thread that receives once on `ch` into `into` and leaves the result in
/// the slot returned with it. It waits at its own priority, so the test
/// thread's yields let it run once it is woken.
fn receiver(ch: &'static Chan, into: Bufs) -> (ThreadRef<S>, Got) {
    let got: Got = Arc::new(Mutex::new(None));
    let slot = got.clone();
    let td = Builder::new("receiver")
        .spawn::<S>(move || {
            let base = crate::current::<S>().sched_priority();
            let r = ch.receive(&into, base);
            *slot.lock().unwrap() = Some(r);
        })
        .unwrap();
    (td, got)
}

/// The bound on messages received and not replied ([`super::MAX_RCVIDS`]):
/// a receive at the bound fails with `Full` and leaves the sender queued,
/// whether the sender came first or the receivers were already waiting
/// (then every wait fails with `Full`: a waiting receiver never sits beside
/// a queued sender); a reply makes room and the next receive takes it,
/// through `receive` and `reply_receive` alike.
#[test]
fn unreplied_messages_are_bounded() {
    const N: usize = super::MAX_RCVIDS;
    for rr in [false, true] {
        run(1, None, move || {
            let ch = channel(true);
            let senders: Vec<_> = (0..N)
                .map(|i| {
                    Builder::new("sender")
                        .spawn::<S>(move || {
                            assert_eq!(ch.send(i as u32, buf(b"x"), zeroed(0)), Ok(i as u64));
                        })
                        .unwrap()
                })
                .collect();
            let into = zeroed(1);
            let mut held = Vec::new();
            for _ in 0..N {
                let Ok(Delivery::Msg(m)) = ch.receive(&into, 0) else {
                    panic!("expected a message");
                };
                held.push(m);
            }
            assert_eq!(ch.queues(), (0, 0, 0, N));
            // Two receivers wait (nothing is queued); then a sender comes.
            let waiters = [receiver(ch, zeroed(1)), receiver(ch, zeroed(1))];
            wait_until("two receivers waiting", || ch.queues().1 == 2);
            let last = Builder::new("last")
                .spawn::<S>(move || {
                    assert_eq!(ch.send(N as u32, buf(b"y"), zeroed(0)), Ok(N as u64));
                })
                .unwrap();
            wait_until("both waiting receives to end", || {
                waiters.iter().all(|(_, got)| got.lock().unwrap().is_some())
            });
            for (td, got) in waiters {
                assert_eq!(got.lock().unwrap().take(), Some(Err(Error::Full)));
                td.join();
            }
            assert_eq!(ch.queues(), (1, 0, 0, N));
            // At the bound with the sender queued: `Full`, nothing taken.
            assert_eq!(ch.receive(&into, 0), Err(Error::Full));
            assert_eq!(ch.queues(), (1, 0, 0, N));
            // A reply makes room; the next receive takes the last sender.
            let first = held.remove(0);
            let next = if rr {
                ch.reply_receive(first.rcvid, first.who.into(), None, &into, 0)
                    .expect("the reply")
            } else {
                ch.reply(first.rcvid, first.who.into(), None).unwrap();
                ch.receive(&into, 0)
            };
            let Ok(Delivery::Msg(m)) = next else {
                panic!("expected the last message, got {next:?}");
            };
            assert_eq!(m.who, N as u32);
            ch.reply(m.rcvid, N as u64, None).unwrap();
            for m in held {
                ch.reply(m.rcvid, m.who.into(), None).unwrap();
            }
            for s in senders {
                s.join();
            }
            last.join();
            assert_eq!(ch.queues(), (0, 0, 0, 0));
        });
    }
}

/// A message its receiver could not take (its buffer was bad) goes to the
/// next receiver waiting, not back to a queue beside it; so does a pulse
/// whose receiver was interrupted.
#[test]
fn what_a_receiver_gives_back_goes_to_the_next_one_waiting() {
    run(1, None, || {
        let ch = channel(true);
        let (r1, first) = receiver(ch, bad());
        wait_until("the first receiver waiting", || ch.queues().1 == 1);
        let into = zeroed(8);
        let (r2, second) = receiver(ch, into.clone());
        wait_until("the second receiver waiting", || ch.queues().1 == 2);
        let sender = Builder::new("sender")
            .spawn::<S>(move || {
                assert_eq!(ch.send(7, buf(b"hello"), zeroed(0)), Ok(77));
            })
            .unwrap();
        wait_until("the message to reach the second receiver", || {
            second.lock().unwrap().is_some()
        });
        assert_eq!(first.lock().unwrap().take(), Some(Err(Error::Fault)));
        let m = second.lock().unwrap().take().expect("received");
        let Ok(Delivery::Msg(m)) = m else {
            panic!("the second receiver got {m:?}");
        };
        assert_eq!((m.who, &contents(&into)[..5]), (7, &b"hello"[..]));
        ch.reply(m.rcvid, 77, None).unwrap();
        sender.join();
        r1.join();
        r2.join();
        assert_eq!(ch.queues(), (0, 0, 0, 0));

        // A pulse given to a receiver that was interrupted a moment before
        // (it has not run since): it goes on to the one waiting behind.
        let (r1, first) = receiver(ch, zeroed(8));
        wait_until("the first receiver waiting", || ch.queues().1 == 1);
        let (r2, second) = receiver(ch, zeroed(8));
        wait_until("the second receiver waiting", || ch.queues().1 == 2);
        crate::interrupt::<S>(&r1);
        // At our priority: the receiver runs at it, and our yields let it.
        let pri = crate::current::<S>().sched_priority();
        ch.pulse(
            Pulse {
                code: 5,
                value: 55,
                pri,
                sender: 0,
            },
            false,
        )
        .unwrap();
        wait_until("the pulse to reach the second receiver", || {
            second.lock().unwrap().is_some()
        });
        assert_eq!(first.lock().unwrap().take(), Some(Err(Error::Interrupted)));
        let p = second.lock().unwrap().take().expect("received");
        assert!(
            matches!(
                p,
                Ok(Delivery::Pulse(Pulse {
                    code: 5,
                    value: 55,
                    ..
                }))
            ),
            "the second receiver got {p:?}"
        );
        r1.join();
        r2.join();
        assert_eq!(ch.queues(), (0, 0, 0, 0));
    });
}
