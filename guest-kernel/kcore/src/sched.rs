//! The scheduling policy behind the kernel's scheduler interface: which ready task runs next and whether
//! the timer tick should preempt the running one. Pure logic over task ids, so it is tested on the host;
//! the kernel (`proc::sched`) owns the tasks, the context switch and the idle task.
//!
//! The policy for now is round-robin with a fixed time slice in ticks; the CFS issue replaces it behind
//! the same [`Policy`] trait.

extern crate alloc;
use alloc::collections::VecDeque;

/// A scheduling policy: a set of ready tasks (the running one is not in it) and the tick decision.
pub trait Policy {
    /// Makes `task` ready (at the back of the queue for round-robin).
    fn enqueue(&mut self, task: u32);
    /// Removes `task` from the ready set if present (it blocked, stopped or died).
    fn remove(&mut self, task: u32);
    /// Takes the next task to run, if any.
    fn pick_next(&mut self) -> Option<u32>;
    /// A timer tick while `curr` runs: true if it should be preempted now.
    fn tick(&mut self) -> bool;
    /// A new task was picked to run: its time slice starts.
    fn started(&mut self);
    /// Ready tasks waiting to run.
    fn ready(&self) -> usize;
}

/// Round-robin: FIFO ready queue, preemption after `slice` ticks when someone else is ready.
#[derive(Debug)]
pub struct RoundRobin {
    queue: VecDeque<u32>,
    slice: u32,
    ran: u32,
}

impl RoundRobin {
    /// A round-robin policy with a time slice of `slice` ticks (at least 1).
    pub const fn new(slice: u32) -> Self {
        RoundRobin {
            queue: VecDeque::new(),
            slice: if slice == 0 { 1 } else { slice },
            ran: 0,
        }
    }
}

impl Policy for RoundRobin {
    fn enqueue(&mut self, task: u32) {
        if !self.queue.contains(&task) {
            self.queue.push_back(task);
        }
    }

    fn remove(&mut self, task: u32) {
        self.queue.retain(|&t| t != task);
    }

    fn pick_next(&mut self) -> Option<u32> {
        self.queue.pop_front()
    }

    fn tick(&mut self) -> bool {
        self.ran += 1;
        self.ran >= self.slice && !self.queue.is_empty()
    }

    fn started(&mut self) {
        self.ran = 0;
    }

    fn ready(&self) -> usize {
        self.queue.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_robin_is_fifo_and_ignores_duplicates() {
        let mut rr = RoundRobin::new(2);
        rr.enqueue(1);
        rr.enqueue(2);
        rr.enqueue(1);
        rr.enqueue(3);
        assert_eq!(rr.ready(), 3);
        rr.remove(2);
        assert_eq!(rr.pick_next(), Some(1));
        assert_eq!(rr.pick_next(), Some(3));
        assert_eq!(rr.pick_next(), None);
    }

    #[test]
    fn tick_preempts_after_the_slice_only_when_someone_waits() {
        let mut rr = RoundRobin::new(2);
        rr.started();
        assert!(!rr.tick());
        assert!(!rr.tick(), "nobody else is ready");
        rr.enqueue(7);
        assert!(rr.tick());
        rr.started();
        assert!(!rr.tick());
        assert!(rr.tick());
    }
}
