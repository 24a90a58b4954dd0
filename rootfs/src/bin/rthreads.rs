//! rthreads: Rust `std::thread` with `Mutex`, `Condvar`, `mpsc` and `Barrier`, printed so that the
//! output can be compared between the host and the guest kernel (tests/tests/guest_threads.rs).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Barrier, Condvar, Mutex};
use std::thread;

fn main() {
    // A counter under a Mutex from 4 threads.
    let counter = Arc::new(Mutex::new(0u64));
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let c = Arc::clone(&counter);
            thread::spawn(move || {
                for _ in 0..10_000 {
                    *c.lock().unwrap() += 1;
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    println!("rthreads: mutex counter {}", *counter.lock().unwrap());

    // A Condvar hand-off.
    let pair = Arc::new((Mutex::new(false), Condvar::new()));
    let p2 = Arc::clone(&pair);
    let t = thread::spawn(move || {
        let (m, c) = &*p2;
        *m.lock().unwrap() = true;
        c.notify_one();
    });
    let (m, c) = &*pair;
    let mut ready = m.lock().unwrap();
    while !*ready {
        ready = c.wait(ready).unwrap();
    }
    drop(ready);
    t.join().unwrap();
    println!("rthreads: condvar woke the waiter");

    // mpsc: 3 producers, one consumer.
    let (tx, rx) = mpsc::channel();
    for id in 0..3u64 {
        let tx = tx.clone();
        thread::spawn(move || {
            for i in 0..100u64 {
                tx.send(id * 1000 + i).unwrap();
            }
        });
    }
    drop(tx);
    let (n, sum) = rx.iter().fold((0, 0u64), |(n, s), v| (n + 1, s + v));
    println!("rthreads: mpsc received {n} messages, sum {sum}");

    // A Barrier: every thread passes only when all have arrived.
    let barrier = Arc::new(Barrier::new(5));
    let arrived = Arc::new(AtomicUsize::new(0));
    let handles: Vec<_> = (0..5)
        .map(|_| {
            let b = Arc::clone(&barrier);
            let a = Arc::clone(&arrived);
            thread::spawn(move || {
                a.fetch_add(1, Ordering::SeqCst);
                let leader = b.wait().is_leader();
                (a.load(Ordering::SeqCst), leader)
            })
        })
        .collect();
    let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    println!(
        "rthreads: barrier: all saw 5 arrived: {}, leaders: {}",
        results.iter().all(|r| r.0 == 5),
        results.iter().filter(|r| r.1).count()
    );

    // A named thread sees its name; thread ids differ.
    let main_id = thread::current().id();
    let (name, other) = thread::Builder::new()
        .name("worker-7".into())
        .spawn(move || {
            (
                thread::current().name().map(str::to_owned),
                thread::current().id() != main_id,
            )
        })
        .unwrap()
        .join()
        .unwrap();
    println!("rthreads: named thread: {name:?}, its own id: {other}");
    println!(
        "rthreads: available parallelism known: {}",
        thread::available_parallelism().is_ok()
    );
    println!("rthreads: done");
}
