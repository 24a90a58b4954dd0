//! The scheduling policy: Linux 6.5's CFS for one CPU, as pure logic over task ids and a nanosecond
//! clock the kernel passes in, so it is tested on the host. The kernel (`proc::sched`) owns the tasks,
//! the context switch, the clock and the idle task; it tells the policy what happened (fork, wakeup,
//! tick, yield, switch) and gets back which task runs and whether the running one must be preempted.
//!
//! Data flow: every task has an [`Entity`] (weight from its nice value and policy, vruntime, runtime
//! statistics). The entities sit in a slab (`entities`, with a task id -> slot map and a free list:
//! it is as long as the most tasks alive at once, and shrinks after a fork storm). The runnable tasks
//! other than the running one sit in a timeline ordered by (vruntime, enqueue sequence), ties FIFO: a
//! binary min-heap in one vector ([`Timeline`]) whose entries carry the entity's slot; the running one
//! is `curr`, also with its slot. So the hot paths (tick, switch) reach entities by index, never by a
//! search, and the timeline's put-back and pick are O(log n) moves of one 24-byte entry, with no
//! allocation once the vector has held that many tasks and no shifting of the others (a B-tree's
//! inserts and removals moved memory, which is slow in emulated kernel code).
//! [`Cfs::update_curr`] charges the time since `exec_start` to `curr`: sum_exec_runtime grows by the
//! real time, vruntime by the time scaled by 1024 / weight (a multiply by the inverse weight, no
//! division), and min_vruntime follows the smallest vruntime but never goes back. Vruntimes are compared
//! wrap-safe (`(a - b) as i64`) and start just below the wrap point, as Linux's do.
//!
//! Cost matters: kernel code is emulated on the development hosts, so a tick is one multiply, a read of
//! the heap's root and a few compares; the division by the run queue's load happens only when the load
//! changed (its inverse is cached). Counted on the host with valgrind (3 runnable tasks, 8 sleeping),
//! a tick is ~125 instructions and a switch's pick ~270 (with the B-trees: ~470 and ~800).

extern crate alloc;
use alloc::collections::BTreeMap;
use alloc::vec::Vec;
use core::cmp::Ordering;

/// Weight of a nice-0 task.
pub const NICE_0_LOAD: u64 = 1024;

/// `sched_prio_to_weight`: the weight of nice -20 ..= 19 (index nice + 20).
pub const PRIO_TO_WEIGHT: [u32; 40] = [
    88761, 71755, 56483, 46273, 36291, 29154, 23254, 18705, 14949, 11916, 9548, 7620, 6100, 4904,
    3906, 3121, 2501, 1991, 1586, 1277, 1024, 820, 655, 526, 423, 335, 272, 215, 172, 137, 110, 87,
    70, 56, 45, 36, 29, 23, 18, 15,
];

/// `sched_prio_to_wmult`: 2^32 / weight, for the same indices.
pub const PRIO_TO_WMULT: [u32; 40] = [
    48388, 59856, 76040, 92818, 118348, 147320, 184698, 229616, 287308, 360437, 449829, 563644,
    704093, 875809, 1099582, 1376151, 1717300, 2157191, 2708050, 3363326, 4194304, 5237765,
    6557202, 8165337, 10153587, 12820798, 15790321, 19976592, 24970740, 31350126, 39045157,
    49367440, 61356676, 76695844, 95443717, 119304647, 148102320, 186737708, 238609294, 286331153,
];

/// SCHED_IDLE's weight and inverse weight (`WEIGHT_IDLEPRIO`, `WMULT_IDLEPRIO`).
pub const WEIGHT_IDLEPRIO: u32 = 3;
pub const WMULT_IDLEPRIO: u32 = 1_431_655_765;

/// Linux's `WMULT_CONST`: inverse weights are 2^32 / weight, saturated to 32 bits.
const WMULT_CONST: u64 = u32::MAX as u64;

/// Where vruntimes start: just below the wrap point, so wrap-safety is exercised within a millisecond
/// of boot (Linux: `min_vruntime = (u64)(-(1LL << 20))`).
pub const VRUNTIME_START: u64 = 0u64.wrapping_sub(1 << 20);

/// The scheduling policies of the fair class (sched_setscheduler numbers).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SchedPolicy {
    Normal = 0,
    Batch = 3,
    Idle = 5,
}

impl SchedPolicy {
    /// The policy for a sched_setscheduler number, `None` for the ones not supported here.
    pub fn from_raw(v: u32) -> Option<Self> {
        match v {
            0 => Some(SchedPolicy::Normal),
            3 => Some(SchedPolicy::Batch),
            5 => Some(SchedPolicy::Idle),
            _ => None,
        }
    }
}

/// The tunables (sysctl_sched_*, for one CPU), settable on the kernel command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tunables {
    /// Targeted preemption latency for CPU-bound tasks (the period while few tasks run).
    pub latency_ns: u64,
    /// Minimal preemption granularity, and each task's share of a long period.
    pub min_granularity_ns: u64,
    /// How far ahead of a woken task the running one may be before the wakeup preempts it.
    pub wakeup_granularity_ns: u64,
}

impl Default for Tunables {
    fn default() -> Self {
        Self::LINUX
    }
}

impl Tunables {
    /// Linux's values for one CPU: latency 6 ms, min_granularity 0.75 ms, wakeup_granularity 1 ms.
    pub const LINUX: Tunables = Tunables {
        latency_ns: 6_000_000,
        min_granularity_ns: 750_000,
        wakeup_granularity_ns: 1_000_000,
    };

    /// `sched_nr_latency`: how many tasks fit in one latency period at min_granularity each (rounded up).
    pub fn nr_latency(&self) -> u64 {
        self.latency_ns.div_ceil(self.min_granularity_ns.max(1))
    }

    /// `__sched_period(nr)`: the latency, stretched to nr * min_granularity when more tasks run.
    pub fn period(&self, nr_running: u64) -> u64 {
        if nr_running > self.nr_latency() {
            nr_running * self.min_granularity_ns
        } else {
            self.latency_ns
        }
    }
}

/// A load weight with its cached inverse (Linux's `struct load_weight`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Load {
    pub weight: u64,
    /// 2^32 / weight (0: not computed yet).
    inv_weight: u32,
}

impl Load {
    /// The weight of a task with `nice` (clamped to -20..=19) under `policy`.
    pub fn of(nice: i32, policy: SchedPolicy) -> Self {
        if policy == SchedPolicy::Idle {
            return Load {
                weight: WEIGHT_IDLEPRIO as u64,
                inv_weight: WMULT_IDLEPRIO,
            };
        }
        let i = (nice.clamp(-20, 19) + 20) as usize;
        Load {
            weight: PRIO_TO_WEIGHT[i] as u64,
            inv_weight: PRIO_TO_WMULT[i],
        }
    }

    /// A sum of weights; its inverse is computed on first use.
    fn sum(weight: u64) -> Self {
        Load {
            weight,
            inv_weight: 0,
        }
    }

    /// `__update_inv_weight`: the one division, done once per change of the weight.
    fn inv(&mut self) -> u32 {
        if self.inv_weight == 0 {
            self.inv_weight = if self.weight >= WMULT_CONST {
                1
            } else {
                WMULT_CONST.checked_div(self.weight).unwrap_or(WMULT_CONST) as u32
            };
        }
        self.inv_weight
    }
}

/// `__calc_delta`: delta * weight / lw.weight as delta * weight * lw.inv_weight >> 32, in 128 bits.
pub fn calc_delta(delta: u64, weight: u64, lw: &mut Load) -> u64 {
    let fact = weight as u128 * lw.inv() as u128;
    ((delta as u128 * fact) >> 32) as u64
}

/// `calc_delta_fair`: real time turned into virtual time for an entity of load `lw`.
pub fn calc_delta_fair(delta: u64, lw: &mut Load) -> u64 {
    if lw.weight == NICE_0_LOAD {
        delta
    } else {
        calc_delta(delta, NICE_0_LOAD, lw)
    }
}

/// Wrap-safe `a < b` for vruntimes (Linux's `entity_before`).
pub fn before(a: u64, b: u64) -> bool {
    (a.wrapping_sub(b) as i64) < 0
}

/// Wrap-safe maximum of two vruntimes.
pub fn max_vruntime(a: u64, b: u64) -> u64 {
    if before(a, b) {
        b
    } else {
        a
    }
}

/// Wrap-safe minimum of two vruntimes.
pub fn min_vruntime(a: u64, b: u64) -> u64 {
    if before(b, a) {
        b
    } else {
        a
    }
}

/// A timeline key: vruntime compared wrap-safe, then the enqueue sequence (ties go right: FIFO).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Key {
    vruntime: u64,
    seq: u64,
}

impl Ord for Key {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.vruntime.wrapping_sub(other.vruntime) as i64)
            .cmp(&0)
            .then(self.seq.cmp(&other.seq))
    }
}

impl PartialOrd for Key {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Key {
    /// `self < other`, written out (the hot path compares keys a few times per operation).
    fn before(&self, other: &Key) -> bool {
        let d = self.vruntime.wrapping_sub(other.vruntime) as i64;
        d < 0 || (d == 0 && self.seq < other.seq)
    }
}

/// One waiting task in the timeline.
#[derive(Clone, Copy, Debug)]
struct Slot {
    key: Key,
    task: u32,
    /// Where the task's entity is in [`Cfs`]'s slab.
    slot: u32,
}

/// The waiting tasks ordered by [`Key`]: a binary min-heap in one vector. The leftmost task is
/// `heap[0]` and the second is one of its two children, so a pick reads them in O(1); putting a task
/// back and taking the leftmost out are O(log n) moves of one 24-byte slot each (no node allocation,
/// no shifting of the rest, unlike a B-tree's or a sorted array's insert and remove). The vector only
/// grows, by at least 16 slots at a time, so the run queue allocates when it has more waiting tasks
/// than ever before and never on the steady-state hot path. Removing a task other than the leftmost
/// (a next buddy that is not the leftmost, a reaped runnable task) looks it up by a scan.
/// Keys are unique (the sequence number differs), so the order is total and the picks are the same
/// as walking a sorted tree.
#[derive(Debug)]
struct Timeline {
    heap: Vec<Slot>,
}

impl Timeline {
    const fn new() -> Self {
        Timeline { heap: Vec::new() }
    }

    fn len(&self) -> usize {
        self.heap.len()
    }

    fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }

    /// The leftmost (smallest key) task.
    fn first(&self) -> Option<Slot> {
        self.heap.first().copied()
    }

    /// The second task in key order: the smaller child of the root.
    fn second(&self) -> Option<Slot> {
        match (self.heap.get(1), self.heap.get(2)) {
            (Some(a), Some(b)) if b.key.before(&a.key) => Some(*b),
            (Some(a), _) => Some(*a),
            _ => None,
        }
    }

    fn push(&mut self, key: Key, task: u32, slot: usize) {
        if self.heap.len() == self.heap.capacity() {
            self.heap.reserve(self.heap.len().max(16));
        }
        self.heap.push(Slot {
            key,
            task,
            slot: slot as u32,
        });
        self.sift_up(self.heap.len() - 1);
    }

    /// Takes `task` out; false if it was not waiting.
    fn remove(&mut self, task: u32) -> bool {
        let Some(i) = self.heap.iter().position(|s| s.task == task) else {
            return false;
        };
        let Some(last) = self.heap.pop() else {
            return false;
        };
        if i < self.heap.len() {
            // The last slot fills the hole and moves down or up to where it belongs.
            self.heap[i] = last;
            let i = self.sift_down(i);
            self.sift_up(i);
        }
        true
    }

    /// Moves the slot at `i` up past the parents it is before; returns where it ends.
    fn sift_up(&mut self, mut i: usize) -> usize {
        let s = self.heap[i];
        while i > 0 {
            let parent = (i - 1) / 2;
            if !s.key.before(&self.heap[parent].key) {
                break;
            }
            self.heap[i] = self.heap[parent];
            i = parent;
        }
        self.heap[i] = s;
        i
    }

    /// Moves the slot at `i` down past the children that are before it; returns where it ends.
    fn sift_down(&mut self, mut i: usize) -> usize {
        let s = self.heap[i];
        let n = self.heap.len();
        loop {
            let mut child = 2 * i + 1;
            if child >= n {
                break;
            }
            if child + 1 < n && self.heap[child + 1].key.before(&self.heap[child].key) {
                child += 1;
            }
            if !self.heap[child].key.before(&s.key) {
                break;
            }
            self.heap[i] = self.heap[child];
            i = child;
        }
        self.heap[i] = s;
        i
    }

    /// The waiting tasks in key order (tests).
    #[cfg(test)]
    fn sorted(&self) -> Vec<u32> {
        let mut v = self.heap.clone();
        v.sort_by_key(|a| a.key);
        v.iter().map(|s| s.task).collect()
    }
}

/// One task's scheduling state and statistics (Linux's `sched_entity` plus the task fields
/// /proc/PID/sched and the CPU-time clocks show).
#[derive(Clone, Copy, Debug)]
pub struct Entity {
    pub load: Load,
    pub nice: i32,
    pub policy: SchedPolicy,
    pub vruntime: u64,
    /// Clock value when `curr` last had its runtime charged.
    pub exec_start: u64,
    /// Total CPU time (ns).
    pub sum_exec_runtime: u64,
    /// sum_exec_runtime when the task last started running (its current slice is the difference).
    pub prev_sum_exec_runtime: u64,
    /// Of sum_exec_runtime, the time spent in kernel mode (the kernel reports it).
    pub stime: u64,
    /// CPU time of reaped children (user, system), for times/getrusage and /proc's cutime/cstime.
    pub children_utime: u64,
    pub children_stime: u64,
    pub nr_voluntary_switches: u64,
    pub nr_involuntary_switches: u64,
    /// Runnable: in the timeline or running.
    pub on_rq: bool,
    /// An opaque word the caller keeps with the task ([`Cfs::set_tag`]; the kernel: where the task's
    /// saved context is), so a switch reaches it by the slot the pick already has, without a lookup.
    pub tag: u64,
    seq: u64,
}

impl Entity {
    fn new(nice: i32, policy: SchedPolicy) -> Self {
        Entity {
            load: Load::of(nice, policy),
            nice,
            policy,
            vruntime: 0,
            exec_start: 0,
            sum_exec_runtime: 0,
            prev_sum_exec_runtime: 0,
            stime: 0,
            children_utime: 0,
            children_stime: 0,
            nr_voluntary_switches: 0,
            nr_involuntary_switches: 0,
            on_rq: false,
            tag: 0,
            seq: 0,
        }
    }

    /// CPU time in user mode (ns): the runtime that was not kernel time.
    pub fn utime(&self) -> u64 {
        self.sum_exec_runtime.saturating_sub(self.stime)
    }

    fn key(&self) -> Key {
        Key {
            vruntime: self.vruntime,
            seq: self.seq,
        }
    }
}

/// What happens to the task that was running when the next one is picked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Prev {
    /// Still runnable (preempted or yielding): it goes back into the timeline.
    Runnable,
    /// It blocked or stopped: it leaves the run queue until woken.
    Sleeping,
    /// It exited: it leaves the run queue for good (its statistics stay until [`Cfs::release`]).
    Dead,
}

/// The CFS run queue of one CPU.
#[derive(Debug)]
pub struct Cfs {
    tun: Tunables,
    /// Every task's entity, in a slab: `index` maps task ids to slots, `free` lists the slots of
    /// released tasks for reuse (so the slab is as long as the most tasks alive at once).
    index: BTreeMap<u32, u32>,
    entities: Vec<Entity>,
    free: Vec<u32>,
    /// The waiting tasks (runnable, not running), with their slots.
    timeline: Timeline,
    /// The running task and its slot: the tick and the switch reach its entity without a lookup.
    curr: Option<(u32, usize)>,
    min_vruntime: u64,
    /// Sum of the weights of the runnable tasks (timeline and curr).
    load: Load,
    nr_running: u64,
    seq: u64,
    /// The task that yielded (skip buddy) and the woken task that preempted (next buddy).
    skip: Option<u32>,
    next: Option<u32>,
}

impl Cfs {
    /// An empty run queue with the given tunables.
    pub const fn new(tun: Tunables) -> Self {
        Cfs {
            tun,
            index: BTreeMap::new(),
            entities: Vec::new(),
            free: Vec::new(),
            timeline: Timeline::new(),
            curr: None,
            min_vruntime: VRUNTIME_START,
            load: Load {
                weight: 0,
                inv_weight: 0,
            },
            nr_running: 0,
            seq: 0,
            skip: None,
            next: None,
        }
    }

    /// Replaces the tunables (boot, from the command line).
    pub fn set_tunables(&mut self, tun: Tunables) {
        self.tun = tun;
    }

    pub fn tunables(&self) -> Tunables {
        self.tun
    }

    /// The running task (`None`: idle).
    pub fn curr(&self) -> Option<u32> {
        self.curr.map(|(task, _)| task)
    }

    /// Keeps `tag` with `task` (see [`Entity::tag`]).
    pub fn set_tag(&mut self, task: u32, tag: u64) {
        if let Some(e) = self.get_mut(task) {
            e.tag = tag;
        }
    }

    /// The running task's tag (0 when idle).
    pub fn curr_tag(&self) -> u64 {
        self.curr.map_or(0, |(_, s)| self.entities[s].tag)
    }

    fn slot(&self, task: u32) -> Option<usize> {
        self.index.get(&task).map(|&s| s as usize)
    }

    fn get(&self, task: u32) -> Option<&Entity> {
        self.slot(task).map(|s| &self.entities[s])
    }

    fn get_mut(&mut self, task: u32) -> Option<&mut Entity> {
        let s = self.slot(task)?;
        Some(&mut self.entities[s])
    }

    fn insert(&mut self, task: u32, e: Entity) {
        if let Some(s) = self.slot(task) {
            self.entities[s] = e;
        } else if let Some(s) = self.free.pop() {
            self.entities[s as usize] = e;
            self.index.insert(task, s);
        } else {
            self.index.insert(task, self.entities.len() as u32);
            self.entities.push(e);
        }
    }

    /// Runnable tasks, the running one included.
    pub fn nr_running(&self) -> u64 {
        self.nr_running
    }

    /// Tasks waiting to run (runnable but not running).
    pub fn ready(&self) -> usize {
        self.timeline.len()
    }

    pub fn min_vruntime(&self) -> u64 {
        self.min_vruntime
    }

    /// A task's entity (statistics as of the last update).
    pub fn entity(&self, task: u32) -> Option<&Entity> {
        self.get(task)
    }

    /// A task's entity with the running task's pending runtime charged first (for CPU-time clocks).
    pub fn entity_now(&mut self, task: u32, now: u64) -> Option<&Entity> {
        if self.curr() == Some(task) {
            self.update_curr(now);
        }
        self.get(task)
    }

    fn add_load(&mut self, w: u64) {
        self.load = Load::sum(self.load.weight + w);
        self.nr_running += 1;
    }

    fn sub_load(&mut self, w: u64) {
        self.load = Load::sum(self.load.weight.saturating_sub(w));
        self.nr_running = self.nr_running.saturating_sub(1);
    }

    fn leftmost(&self) -> Option<(Key, u32)> {
        self.timeline.first().map(|s| (s.key, s.task))
    }

    /// `update_min_vruntime`: follows the smaller of curr's and the leftmost vruntime, never backwards.
    fn update_min_vruntime(&mut self) {
        let curr_v = self
            .curr
            .map(|(_, s)| &self.entities[s])
            .filter(|e| e.on_rq)
            .map(|e| e.vruntime);
        self.update_min_vruntime_with(curr_v);
    }

    /// [`Self::update_min_vruntime`] with curr's vruntime (if it is on the run queue) already looked up.
    fn update_min_vruntime_with(&mut self, curr_v: Option<u64>) {
        let mut v = curr_v.unwrap_or(self.min_vruntime);
        if let Some((k, _)) = self.leftmost() {
            v = match curr_v {
                Some(c) => min_vruntime(c, k.vruntime),
                None => k.vruntime,
            };
        }
        self.min_vruntime = max_vruntime(self.min_vruntime, v);
    }

    /// `update_curr`: charges the time since `exec_start` to the running task.
    pub fn update_curr(&mut self, now: u64) {
        let Some((_, s)) = self.curr else {
            return;
        };
        let e = &mut self.entities[s];
        // A clock that has not advanced charges nothing (and exec_start stays).
        let delta = now.saturating_sub(e.exec_start);
        if delta == 0 {
            return;
        }
        e.exec_start = now;
        e.sum_exec_runtime += delta;
        e.vruntime = e.vruntime.wrapping_add(calc_delta_fair(delta, &mut e.load));
        let curr_v = e.on_rq.then_some(e.vruntime);
        self.update_min_vruntime_with(curr_v);
    }

    /// `sched_slice`: the task's share of the period by weight, at least min_granularity.
    pub fn sched_slice(&mut self, task: u32) -> u64 {
        let Some(e) = self.get(task) else {
            return 0;
        };
        let (w, on_rq) = (e.load.weight, e.on_rq);
        self.slice_of(w, on_rq)
    }

    /// The slice of a task of weight `w` that is (or is about to be, `!on_rq`) on the run queue.
    fn slice_of(&mut self, w: u64, on_rq: bool) -> u64 {
        let slice = self.tun.period(self.nr_running + !on_rq as u64);
        let slice = if on_rq {
            calc_delta(slice, w, &mut self.load)
        } else {
            calc_delta(slice, w, &mut Load::sum(self.load.weight + w))
        };
        slice.max(self.tun.min_granularity_ns)
    }

    /// `sched_vslice`: the slice in virtual time.
    pub fn sched_vslice(&mut self, task: u32) -> u64 {
        let slice = self.sched_slice(task);
        match self.get_mut(task) {
            Some(e) => calc_delta_fair(slice, &mut e.load),
            None => 0,
        }
    }

    /// `place_entity`: a new task starts a slice behind min_vruntime (START_DEBIT), a waking one up to
    /// half a latency before it (GENTLE_FAIR_SLEEPERS); nobody gains by having slept or been forked.
    fn place(&mut self, task: u32, initial: bool) {
        let mut v = self.min_vruntime;
        if initial {
            v = v.wrapping_add(self.sched_vslice(task));
        } else {
            v = v.wrapping_sub(self.tun.latency_ns / 2);
        }
        if let Some(e) = self.get_mut(task) {
            e.vruntime = max_vruntime(e.vruntime, v);
        }
    }

    /// Puts a runnable, not running task into the timeline.
    fn enqueue(&mut self, task: u32) {
        self.seq += 1;
        let seq = self.seq;
        let Some(s) = self.slot(task) else {
            return;
        };
        let e = &mut self.entities[s];
        e.seq = seq;
        let key = e.key();
        let w = e.load.weight;
        if !e.on_rq {
            e.on_rq = true;
            self.add_load(w);
        }
        self.timeline.push(key, task, s);
    }

    fn clear_buddies(&mut self, task: u32) {
        if self.skip == Some(task) {
            self.skip = None;
        }
        if self.next == Some(task) {
            self.next = None;
        }
    }

    /// A new task (`child` forked by `parent`, or the first task when `parent` is `None`): it inherits
    /// the parent's nice and policy, starts at max(parent's vruntime, min_vruntime + its vslice) and
    /// waits in the timeline (child_runs_first = 0). True if it should preempt the running task.
    pub fn fork(&mut self, now: u64, parent: Option<u32>, child: u32) -> bool {
        self.update_curr(now);
        let p = parent.and_then(|p| self.get(p)).copied();
        let mut e = match p {
            Some(p) => Entity::new(p.nice, p.policy),
            None => Entity::new(0, SchedPolicy::Normal),
        };
        e.vruntime = p.map_or(self.min_vruntime, |p| p.vruntime);
        self.insert(child, e);
        self.place(child, true);
        self.enqueue(child);
        self.check_preempt_wakeup(child)
    }

    /// A sleeping task becomes runnable (placed with the sleeper credit). True if it should preempt the
    /// running task (the caller reschedules at the next chance).
    pub fn wake(&mut self, now: u64, task: u32) -> bool {
        match self.get(task) {
            Some(e) if !e.on_rq => {}
            _ => return false,
        }
        self.update_curr(now);
        self.place(task, false);
        self.enqueue(task);
        self.check_preempt_wakeup(task)
    }

    /// `wakeup_preempt_entity(curr, se)`: 1 if curr is ahead of se by more than the wakeup
    /// granularity (in se's virtual time), -1 if not ahead at all, else 0.
    fn wakeup_preempt_entity(&self, curr_v: u64, se: &Entity) -> i32 {
        let vdiff = curr_v.wrapping_sub(se.vruntime) as i64;
        if vdiff <= 0 {
            return -1;
        }
        let gran = calc_delta_fair(self.tun.wakeup_granularity_ns, &mut se.load.clone());
        if vdiff as u64 > gran {
            1
        } else {
            0
        }
    }

    /// `check_preempt_wakeup` for a task just made runnable.
    fn check_preempt_wakeup(&mut self, woken: u32) -> bool {
        let Some(c) = self.curr() else {
            return true;
        };
        if c == woken {
            return false;
        }
        let (Some(ce), Some(we)) = (self.get(c), self.get(woken)) else {
            return false;
        };
        // Idle-policy tasks are preempted by any other; batch and idle ones never preempt on wakeup.
        if ce.policy == SchedPolicy::Idle && we.policy != SchedPolicy::Idle {
            return true;
        }
        if we.policy != SchedPolicy::Normal {
            return false;
        }
        if self.wakeup_preempt_entity(ce.vruntime, we) == 1 {
            self.next = Some(woken);
            return true;
        }
        false
    }

    /// The timer tick (`entity_tick` + `check_preempt_tick`): true if the running task has had its
    /// slice, or is ahead of the leftmost waiting task by more than its slice.
    pub fn tick(&mut self, now: u64) -> bool {
        self.update_curr(now);
        let Some((c, cs)) = self.curr else {
            return !self.timeline.is_empty();
        };
        if self.nr_running <= 1 {
            return false;
        }
        let e = &self.entities[cs];
        let (w, on_rq, vruntime) = (e.load.weight, e.on_rq, e.vruntime);
        let ran = e.sum_exec_runtime - e.prev_sum_exec_runtime;
        let ideal = self.slice_of(w, on_rq).min(self.tun.latency_ns);
        if ran > ideal {
            self.clear_buddies(c);
            return true;
        }
        if ran < self.tun.min_granularity_ns {
            return false;
        }
        let Some((left, _)) = self.leftmost() else {
            return false;
        };
        let delta = vruntime.wrapping_sub(left.vruntime) as i64;
        delta > 0 && delta as u64 > ideal
    }

    /// `yield_task_fair`: the running task marks itself to be skipped at the next pick (the caller then
    /// picks with [`Prev::Runnable`]).
    pub fn yield_curr(&mut self, now: u64) {
        let Some(c) = self.curr() else { return };
        if self.nr_running <= 1 {
            return;
        }
        self.clear_buddies(c);
        self.update_curr(now);
        self.skip = Some(c);
    }

    /// Switches: charges the running task (and adds `prev_stime`, the kernel time it spent since it
    /// was picked), puts it back (or takes it off the run queue), and makes the best waiting task the
    /// running one. Returns it (`None`: run the idle task).
    pub fn pick_next(&mut self, now: u64, prev: Prev, prev_stime: u64) -> Option<u32> {
        self.update_curr(now);
        let old = self.curr.take();
        if let Some((c, cs)) = old {
            self.seq += 1;
            let seq = self.seq;
            let e = &mut self.entities[cs];
            e.stime += prev_stime;
            if prev == Prev::Runnable {
                // Still on the run queue (it counts in the load): back into the timeline.
                e.seq = seq;
                e.nr_involuntary_switches += 1;
                let key = e.key();
                self.timeline.push(key, c, cs);
            } else {
                e.nr_voluntary_switches += 1;
                if e.on_rq {
                    e.on_rq = false;
                    let w = e.load.weight;
                    self.sub_load(w);
                }
                self.clear_buddies(c);
                self.update_min_vruntime();
            }
        }
        let (next, ns) = self.pick_entity()?;
        let e = &mut self.entities[ns];
        e.exec_start = now;
        e.prev_sum_exec_runtime = e.sum_exec_runtime;
        if old.map(|(c, _)| c) == Some(next) {
            // Picked again: no switch happened.
            e.nr_involuntary_switches -= 1;
        }
        self.timeline.remove(next);
        self.clear_buddies(next);
        self.curr = Some((next, ns));
        Some(next)
    }

    /// `pick_next_entity`: the leftmost, unless it is the skip buddy and the second is not too far
    /// behind, or a next buddy is not too far ahead of it.
    /// Returns the task and its slot.
    fn pick_entity(&self) -> Option<(u32, usize)> {
        let left = self.timeline.first()?;
        let mut se = (left.task, left.slot as usize);
        if self.skip.is_none() && self.next.is_none() {
            return Some(se);
        }
        let left_e = &self.entities[se.1];
        if self.skip == Some(left.task) {
            if let Some(s) = self.timeline.second() {
                if self.wakeup_preempt_entity(s.key.vruntime, left_e) < 1 {
                    se = (s.task, s.slot as usize);
                }
            }
        }
        if let Some(n) = self.next {
            if let Some(ns) = self.slot(n) {
                let ne = &self.entities[ns];
                if ne.on_rq && self.wakeup_preempt_entity(ne.vruntime, left_e) < 1 {
                    se = (n, ns);
                }
            }
        }
        Some(se)
    }

    /// Changes a task's nice value and policy (`reweight_entity`: the load follows, vruntime stays).
    /// True if the running task should be rescheduled.
    pub fn set_weight(&mut self, now: u64, task: u32, nice: i32, policy: SchedPolicy) -> bool {
        let is_curr = self.curr() == Some(task);
        if is_curr {
            self.update_curr(now);
        }
        let Some(e) = self.get_mut(task) else {
            return false;
        };
        let old = e.load.weight;
        e.nice = nice.clamp(-20, 19);
        e.policy = policy;
        e.load = Load::of(e.nice, policy);
        let new = e.load.weight;
        if e.on_rq {
            self.load = Load::sum(self.load.weight - old + new);
        }
        // prio_changed_fair: a running task that got lighter, or a waiting one that got heavier.
        if is_curr {
            new < old
        } else {
            self.get(task).is_some_and(|e| e.on_rq) && self.check_preempt_wakeup(task)
        }
    }

    /// The running task takes the id `new` (execve from a thread takes its group leader's pid, Linux's
    /// de_thread; the leader was released first). False if no task runs or `new` is in use.
    pub fn rename_curr(&mut self, new: u32) -> bool {
        let Some((old, s)) = self.curr else {
            return false;
        };
        if self.index.contains_key(&new) {
            return false;
        }
        self.index.remove(&old);
        self.index.insert(new, s as u32);
        self.curr = Some((new, s));
        self.clear_buddies(old);
        true
    }

    /// Forgets a reaped task; its CPU time (with its own children's) is added to `parent`'s children
    /// totals.
    pub fn release(&mut self, task: u32, parent: Option<u32>) {
        if self.curr() == Some(task) {
            return;
        }
        let Some(s) = self.index.remove(&task) else {
            return;
        };
        self.free.push(s);
        let e = self.entities[s as usize];
        if e.on_rq {
            self.timeline.remove(task);
            self.sub_load(e.load.weight);
        }
        self.clear_buddies(task);
        if let Some(p) = parent.and_then(|p| self.get_mut(p)) {
            p.children_utime += e.utime() + e.children_utime;
            p.children_stime += e.stime + e.children_stime;
        }
        self.shrink();
    }

    /// Gives memory back after a burst of tasks (a fork storm): when at most a quarter of a slab of
    /// more than 64 slots is in use, the live entities move to a new slab (twice their number in
    /// capacity) and the slots in the timeline and curr follow. Runs on release only, never on a pick.
    fn shrink(&mut self) {
        let live = self.index.len();
        if self.entities.len() <= 64 || live * 4 > self.entities.len() {
            return;
        }
        let mut entities = Vec::with_capacity(live.max(16) * 2);
        for s in self.index.values_mut() {
            entities.push(self.entities[*s as usize]);
            *s = (entities.len() - 1) as u32;
        }
        for w in self.timeline.heap.iter_mut() {
            if let Some(&s) = self.index.get(&w.task) {
                w.slot = s;
            }
        }
        if let Some((c, _)) = self.curr {
            if let Some(&s) = self.index.get(&c) {
                self.curr = Some((c, s as usize));
            }
        }
        self.entities = entities;
        self.free = Vec::new();
        let heap = &mut self.timeline.heap;
        heap.shrink_to(heap.len().max(16) * 2);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    fn cfs() -> Cfs {
        Cfs::new(Tunables::default())
    }

    /// Runs `ms` milliseconds in 1 ms ticks, switching whenever the policy says so; returns each
    /// task's runtime.
    fn simulate(c: &mut Cfs, now: &mut u64, ms: u64) {
        if c.curr().is_none() {
            c.pick_next(*now, Prev::Runnable, 0);
        }
        for _ in 0..ms {
            *now += MS;
            if c.tick(*now) {
                c.pick_next(*now, Prev::Runnable, 0);
            }
        }
        c.update_curr(*now);
    }

    #[test]
    fn the_running_task_takes_its_leaders_id() {
        let mut c = cfs();
        let mut now = 0;
        c.fork(now, None, 1);
        c.fork(now, Some(1), 2);
        c.fork(now, Some(1), 3);
        // Run until task 3 is current.
        for _ in 0..100 {
            if c.curr() == Some(3) {
                break;
            }
            now += MS;
            c.pick_next(now, Prev::Runnable, 0);
        }
        assert_eq!(c.curr(), Some(3));
        assert!(!c.rename_curr(2), "2 is still in use");
        c.pick_next(now, Prev::Runnable, 0);
        let cur = c.curr().unwrap();
        let other = if cur == 2 { 3 } else { 2 };
        c.release(other, None);
        assert!(c.rename_curr(other));
        assert_eq!(c.curr(), Some(other));
        assert!(c.entity(cur).is_none(), "the old id is gone");
        assert!(c.entity(other).is_some());
        // It goes on being scheduled under the new id.
        simulate(&mut c, &mut now, 50);
        assert!(c.entity(other).unwrap().sum_exec_runtime > 0);
    }

    #[test]
    fn weight_tables_are_linux_and_inverse() {
        assert_eq!(Load::of(0, SchedPolicy::Normal).weight, 1024);
        assert_eq!(Load::of(5, SchedPolicy::Normal).weight, 335);
        assert_eq!(Load::of(-20, SchedPolicy::Normal).weight, 88761);
        assert_eq!(Load::of(19, SchedPolicy::Batch).weight, 15);
        assert_eq!(Load::of(99, SchedPolicy::Normal).weight, 15, "clamped");
        assert_eq!(Load::of(0, SchedPolicy::Idle).weight, 3);
        for i in 0..40 {
            let prod = PRIO_TO_WEIGHT[i] as u64 * PRIO_TO_WMULT[i] as u64;
            let err = prod.abs_diff(1 << 32);
            assert!(err < PRIO_TO_WEIGHT[i] as u64, "index {i}");
        }
        // Each nice step is ~1.25x (the "10% effect").
        for i in 1..40 {
            let r = PRIO_TO_WEIGHT[i - 1] as f64 / PRIO_TO_WEIGHT[i] as f64;
            assert!((1.15..1.35).contains(&r), "step {i}: {r}");
        }
    }

    #[test]
    fn vruntime_scales_by_inverse_weight() {
        let mut l = Load::of(0, SchedPolicy::Normal);
        assert_eq!(calc_delta_fair(1_000_000, &mut l), 1_000_000);
        let mut l = Load::of(5, SchedPolicy::Normal);
        // 1 ms at weight 335 is 1024/335 ms of virtual time.
        let v = calc_delta_fair(MS, &mut l);
        assert!(v.abs_diff(MS * 1024 / 335) <= 2, "{v}");
        let mut l = Load::of(-20, SchedPolicy::Normal);
        let v = calc_delta_fair(MS, &mut l);
        assert!(v.abs_diff(MS * 1024 / 88761) <= 2, "{v}");
        // Sums of weights get their inverse computed once.
        let mut s = Load::sum(1024 + 335);
        assert_eq!(
            calc_delta(6 * MS, 1024, &mut s),
            6 * MS * 1024 / 1359,
            "slice of nice 0 next to nice 5"
        );
    }

    #[test]
    fn periods_and_slices() {
        let t = Tunables::default();
        assert_eq!(t.nr_latency(), 8);
        assert_eq!(t.period(1), 6 * MS);
        assert_eq!(t.period(8), 6 * MS);
        assert_eq!(t.period(9), 9 * 750_000);
        let mut c = cfs();
        c.fork(0, None, 1);
        c.fork(0, Some(1), 2);
        c.set_weight(0, 2, 5, SchedPolicy::Normal);
        let s1 = c.sched_slice(1);
        let s2 = c.sched_slice(2);
        assert!(s1.abs_diff(6 * MS * 1024 / 1359) < 1000, "{s1}");
        assert!(s2.abs_diff(6 * MS * 335 / 1359) < 1000, "{s2}");
        // Twenty equal tasks: period 15 ms, each slice 0.75 ms (never below min_granularity).
        let mut c = cfs();
        for i in 1..=20 {
            c.fork(0, None, i);
        }
        assert!(c.sched_slice(3).abs_diff(750_000) < 10);
        c.set_weight(0, 4, 19, SchedPolicy::Normal);
        assert_eq!(c.sched_slice(4), 750_000, "at least min_granularity");
    }

    #[test]
    fn update_curr_charges_runtime_and_moves_min_vruntime() {
        let mut c = cfs();
        c.fork(0, None, 1);
        assert_eq!(c.pick_next(0, Prev::Runnable, 0), Some(1));
        let v0 = c.entity(1).unwrap().vruntime;
        c.update_curr(3 * MS);
        let e = *c.entity(1).unwrap();
        assert_eq!(e.sum_exec_runtime, 3 * MS);
        assert_eq!(e.vruntime.wrapping_sub(v0), 3 * MS);
        assert_eq!(c.min_vruntime(), e.vruntime, "alone: min follows curr");
        // A clock that goes back charges nothing.
        c.update_curr(2 * MS);
        assert_eq!(c.entity(1).unwrap().sum_exec_runtime, 3 * MS);
        c.set_weight(3 * MS, 1, 5, SchedPolicy::Normal);
        c.update_curr(4 * MS);
        let e2 = *c.entity(1).unwrap();
        assert_eq!(e2.sum_exec_runtime, 4 * MS);
        assert!(
            e2.vruntime
                .wrapping_sub(e.vruntime)
                .abs_diff(MS * 1024 / 335)
                < 5
        );
    }

    /// The heap timeline against a sorted reference: random pushes (vruntimes around the wrap point,
    /// many equal) and removals of the leftmost, of the second and of arbitrary tasks; first and second
    /// always match the reference's first two in key order.
    #[test]
    fn timeline_heap_matches_a_sorted_reference() {
        let mut t = Timeline::new();
        let mut reference: Vec<Slot> = Vec::new();
        let mut rng = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let mut seq = 0;
        for step in 0..20_000u32 {
            let r = next();
            if reference.len() < 40 && (r % 3 != 0 || reference.is_empty()) {
                seq += 1;
                let key = Key {
                    vruntime: VRUNTIME_START.wrapping_add((next() % 64) * MS / 8),
                    seq,
                };
                t.push(key, step, 0);
                reference.push(Slot {
                    key,
                    task: step,
                    slot: 0,
                });
            } else {
                let victim = match r % 5 {
                    0 => t.first(),
                    1 => t.second().or(t.first()),
                    _ => Some(reference[(next() % reference.len() as u64) as usize]),
                };
                let v = victim.unwrap().task;
                assert!(t.remove(v));
                assert!(!t.remove(v), "removed twice");
                reference.retain(|s| s.task != v);
            }
            reference.sort_by_key(|a| a.key);
            let want: Vec<u32> = reference.iter().map(|s| s.task).collect();
            assert_eq!(t.len(), want.len());
            assert_eq!(
                t.first().map(|s| s.task),
                want.first().copied(),
                "step {step}"
            );
            assert_eq!(
                t.second().map(|s| s.task),
                want.get(1).copied(),
                "step {step}"
            );
            if step % 97 == 0 {
                assert_eq!(t.sorted(), want);
            }
        }
    }

    /// Released tasks' slab slots go to new tasks: the slab is as long as the most tasks alive at once,
    /// and a reused slot starts with a fresh entity.
    #[test]
    fn released_slots_are_reused() {
        let mut c = cfs();
        c.fork(0, None, 1);
        c.pick_next(0, Prev::Runnable, 0);
        for t in 2..10 {
            c.fork(0, Some(1), t);
        }
        let len = c.entities.len();
        for round in 0..100u32 {
            let t = 100 + round;
            c.fork(0, Some(1), t);
            c.pick_next(round as u64 * MS, Prev::Runnable, 0);
            let e = c.entity(t).unwrap();
            assert_eq!(e.nr_voluntary_switches + e.nr_involuntary_switches, 0);
            assert!(e.on_rq);
            // Released while runnable and waiting: it leaves the timeline and the load.
            if c.curr() != Some(t) {
                c.release(t, Some(1));
                assert!(c.entity(t).is_none());
            } else {
                c.pick_next(round as u64 * MS, Prev::Dead, 0);
                c.release(t, Some(1));
            }
            assert_eq!(c.nr_running(), 9);
            assert_eq!(c.ready(), 8);
        }
        assert_eq!(c.entities.len(), len + 1);
    }

    /// Each task's tag is the running task's tag once it is picked, through slot reuse and a shrink of
    /// the slab; a reused slot starts without the old tag.
    #[test]
    fn the_running_tasks_tag_follows_the_pick() {
        let mut c = cfs();
        assert_eq!(c.curr_tag(), 0);
        c.fork(0, None, 1);
        c.set_tag(1, 1001);
        c.pick_next(0, Prev::Runnable, 0);
        assert_eq!(c.curr_tag(), 1001);
        for t in 2..200 {
            c.fork(0, Some(1), t);
            c.set_tag(t, 1000 + t as u64);
        }
        // Most tasks go; the slab shrinks and the survivors' tags move with their entities.
        for t in 2..190 {
            c.release(t, Some(1));
        }
        c.fork(0, Some(1), 500);
        assert_eq!(c.entity(500).unwrap().tag, 0);
        c.set_tag(500, 1500);
        let mut seen = Vec::new();
        for i in 1..=40u64 {
            let next = c.pick_next(i * 10 * MS, Prev::Runnable, 0).unwrap();
            assert_eq!(c.curr_tag(), 1000 + next as u64);
            seen.push(next);
        }
        for t in [1, 190, 199, 500] {
            assert!(seen.contains(&t), "{t} never ran: {seen:?}");
        }
        c.pick_next(500 * MS, Prev::Dead, 0);
        c.set_tag(12345, 1);
    }

    /// After a fork storm the slab shrinks, and the tasks left keep their entities and their places in
    /// the timeline.
    #[test]
    fn the_slab_shrinks_after_a_fork_storm() {
        let mut c = cfs();
        c.fork(0, None, 1);
        c.pick_next(0, Prev::Runnable, 0);
        for t in 2..300 {
            c.fork(0, Some(1), t);
        }
        assert_eq!(c.entities.len(), 299);
        // Give the survivors distinct statistics to recognise them by.
        for t in [7, 150, 299] {
            c.get_mut(t).unwrap().nr_voluntary_switches = t as u64;
        }
        let order_before: Vec<u32> = c
            .timeline
            .sorted()
            .into_iter()
            .filter(|t| [7, 150, 299].contains(t))
            .collect();
        for t in 2..300 {
            if ![7, 150, 299].contains(&t) {
                c.release(t, Some(1));
            }
        }
        assert!(c.entities.len() <= 64, "{}", c.entities.len());
        assert!(c.timeline.heap.capacity() <= 64);
        assert_eq!(c.timeline.sorted(), order_before);
        for t in [7, 150, 299] {
            assert_eq!(c.entity(t).unwrap().nr_voluntary_switches, t as u64);
        }
        // curr's slot followed too: it is charged, and the waiting ones run in their order.
        c.update_curr(MS);
        assert_eq!(c.entity(1).unwrap().sum_exec_runtime, MS);
        let mut ran = Vec::new();
        for _ in 0..3 {
            ran.push(c.pick_next(MS, Prev::Sleeping, 0).unwrap());
        }
        assert_eq!(ran, order_before);
        assert_eq!(c.pick_next(MS, Prev::Sleeping, 0), None);
    }

    /// Once the timeline has held n tasks, putting tasks back and picking them does not allocate.
    #[test]
    fn timeline_reuses_its_capacity() {
        let mut t = Timeline::new();
        for i in 0..20 {
            t.push(
                Key {
                    vruntime: i,
                    seq: i,
                },
                i as u32,
                0,
            );
        }
        let cap = t.heap.capacity();
        for i in 20..2000u64 {
            let first = t.first().unwrap().task;
            assert!(t.remove(first));
            t.push(
                Key {
                    vruntime: i,
                    seq: i,
                },
                i as u32,
                0,
            );
            assert_eq!(t.heap.capacity(), cap);
        }
    }

    #[test]
    fn min_vruntime_is_monotonic_and_wrap_safe() {
        let mut c = cfs();
        assert!(
            c.min_vruntime() > u64::MAX - (2 << 20),
            "starts below the wrap"
        );
        c.fork(0, None, 1);
        c.fork(0, Some(1), 2);
        let mut now = 0;
        let mut last = c.min_vruntime();
        let mut wrapped = false;
        c.pick_next(0, Prev::Runnable, 0);
        for _ in 0..50 {
            now += MS;
            if c.tick(now) {
                c.pick_next(now, Prev::Runnable, 0);
            }
            let m = c.min_vruntime();
            assert!(!before(m, last), "min_vruntime went back");
            wrapped |= m < last;
            last = m;
        }
        assert!(wrapped, "the test crossed the wrap point");
        // After the wrap both still share the CPU evenly.
        let a = c.entity(1).unwrap().sum_exec_runtime;
        let b = c.entity(2).unwrap().sum_exec_runtime;
        assert!(a.abs_diff(b) <= 7 * MS, "{a} {b}");
        // A sleeper leaving does not move min_vruntime back either.
        let m = c.min_vruntime();
        c.pick_next(now, Prev::Sleeping, 0);
        assert!(!before(c.min_vruntime(), m));
    }

    #[test]
    fn wrap_safe_comparisons() {
        assert!(before(u64::MAX - 5, 3));
        assert!(!before(3, u64::MAX - 5));
        assert_eq!(max_vruntime(u64::MAX - 5, 3), 3);
        assert_eq!(min_vruntime(u64::MAX - 5, 3), u64::MAX - 5);
        let a = Key {
            vruntime: u64::MAX - 1,
            seq: 9,
        };
        let b = Key {
            vruntime: 1,
            seq: 1,
        };
        assert!(a < b);
    }

    /// Test helper: moves a queued task to vruntime `v` (re-enqueued: it goes behind equal ones).
    fn requeue(c: &mut Cfs, t: u32, v: u64) {
        c.timeline.remove(t);
        c.get_mut(t).unwrap().vruntime = v;
        c.enqueue(t);
    }

    #[test]
    fn timeline_orders_by_vruntime_and_ties_are_fifo() {
        let mut c = cfs();
        c.fork(0, None, 1);
        c.pick_next(0, Prev::Runnable, 0);
        for t in [2, 3, 4, 5] {
            c.fork(0, Some(1), t);
        }
        let m = c.min_vruntime();
        requeue(&mut c, 5, m + MS);
        for t in [3, 2, 4] {
            requeue(&mut c, t, m);
        }
        let order: Vec<u32> = c.timeline.sorted();
        assert_eq!(order, vec![3, 2, 4, 5]);
        c.get_mut(1).unwrap().vruntime = m.wrapping_add(10 * MS);
        assert_eq!(c.pick_next(0, Prev::Runnable, 0), Some(3));
        assert_eq!(c.pick_next(0, Prev::Sleeping, 0), Some(2));
        assert_eq!(c.pick_next(0, Prev::Sleeping, 0), Some(4));
        assert_eq!(c.pick_next(0, Prev::Sleeping, 0), Some(5));
        assert_eq!(c.pick_next(0, Prev::Sleeping, 0), Some(1));
        assert_eq!(c.pick_next(0, Prev::Sleeping, 0), None);
        assert_eq!(c.nr_running(), 0);
        assert_eq!(c.load.weight, 0);
    }

    #[test]
    fn fork_places_the_child_a_slice_behind_and_the_parent_keeps_running() {
        let mut c = cfs();
        c.fork(0, None, 1);
        c.pick_next(0, Prev::Runnable, 0);
        c.update_curr(2 * MS);
        let preempt = c.fork(2 * MS, Some(1), 2);
        assert!(!preempt, "child_runs_first = 0");
        let p = c.entity(1).unwrap().vruntime;
        let ch = c.entity(2).unwrap().vruntime;
        // Two tasks: the child's vslice is half the 6 ms latency.
        assert!(ch.wrapping_sub(c.min_vruntime()).abs_diff(3 * MS) < 10);
        assert!(before(p, ch));
        // Nice is inherited.
        c.set_weight(2 * MS, 1, 7, SchedPolicy::Batch);
        c.fork(2 * MS, Some(1), 3);
        let e = c.entity(3).unwrap();
        assert_eq!((e.nice, e.policy), (7, SchedPolicy::Batch));
    }

    #[test]
    fn wakeup_gives_half_a_latency_of_credit_and_preempts_past_the_granularity() {
        let mut c = cfs();
        c.fork(0, None, 1);
        c.fork(0, None, 2);
        let mut now = 0;
        let a = c.pick_next(now, Prev::Runnable, 0).unwrap();
        let b = 3 - a;
        now += MS;
        assert_eq!(c.pick_next(now, Prev::Sleeping, 0), Some(b), "a sleeps");
        // b runs alone for a long time; a wakes at min_vruntime - 3 ms, not at its old vruntime.
        for _ in 0..100 {
            now += MS;
            assert!(!c.tick(now));
        }
        let m = c.min_vruntime();
        assert!(c.wake(now, a), "3 ms of credit > 1 ms wakeup granularity");
        assert_eq!(c.entity(a).unwrap().vruntime, m - 3 * MS);
        assert_eq!(c.pick_next(now, Prev::Runnable, 0), Some(a));
        assert!(!c.wake(now, a), "already runnable");
        // A short sleep keeps the old vruntime: no credit beyond it.
        now += MS;
        let v = c.entity(a).unwrap().vruntime;
        assert_eq!(c.pick_next(now, Prev::Sleeping, 0), Some(b));
        assert!(c.wake(now, a), "b is 2 ms ahead of a");
        assert_eq!(
            c.entity(a).unwrap().vruntime,
            v + MS,
            "kept, not min_vruntime - 3 ms"
        );

        // A woken task less than the granularity behind the running one does not preempt it.
        let mut c = cfs();
        c.fork(0, None, 1);
        c.fork(0, None, 2);
        let a = c.pick_next(0, Prev::Runnable, 0).unwrap();
        let b = c.pick_next(0, Prev::Sleeping, 0).unwrap();
        assert_eq!(a + b, 3);
        c.get_mut(a).unwrap().vruntime = c.min_vruntime() - MS / 2;
        c.get_mut(b).unwrap().vruntime = c.min_vruntime();
        assert!(!c.wake(0, a), "0.5 ms < 1 ms granularity");
        c.pick_next(0, Prev::Runnable, 0);
        c.pick_next(0, Prev::Sleeping, 0);

        // Batch tasks never preempt on wakeup; anything preempts an idle-policy task.
        let mut c = cfs();
        c.fork(0, None, 1);
        c.fork(0, None, 2);
        let a = c.pick_next(0, Prev::Runnable, 0).unwrap();
        let b = c.pick_next(0, Prev::Sleeping, 0).unwrap();
        c.set_weight(0, a, 0, SchedPolicy::Batch);
        c.update_curr(100 * MS);
        assert!(!c.wake(100 * MS, a), "a batch task waits for the tick");
        assert_eq!(c.pick_next(100 * MS, Prev::Runnable, 0), Some(a));
        c.set_weight(100 * MS, a, 0, SchedPolicy::Idle);
        assert_eq!(c.pick_next(100 * MS, Prev::Sleeping, 0), Some(b));
        assert_eq!(c.pick_next(100 * MS, Prev::Sleeping, 0), None);
        c.wake(100 * MS, a);
        assert_eq!(c.pick_next(100 * MS, Prev::Runnable, 0), Some(a));
        assert!(
            c.wake(100 * MS, b),
            "a normal task preempts an idle-policy one"
        );

        // With nobody running, a new task always "preempts" the idle task.
        let mut c = cfs();
        assert!(c.fork(0, None, 1));
    }

    #[test]
    fn tick_preempts_after_the_slice_not_before_min_granularity() {
        let mut c = cfs();
        c.fork(0, None, 1);
        assert!(c.tick(0), "idle while a task is ready");
        c.pick_next(0, Prev::Runnable, 0);
        assert!(!c.tick(100 * MS), "alone: never preempted");
        c.fork(100 * MS, Some(1), 2);
        c.pick_next(100 * MS, Prev::Runnable, 0);
        let who = c.curr().unwrap();
        // Two equal tasks: slice 3 ms.
        assert!(!c.tick(100 * MS + MS / 2), "below min_granularity");
        assert!(!c.tick(100 * MS + 2_900_000), "within the slice");
        assert!(c.tick(100 * MS + 3_100_000), "past the slice");
        assert_eq!(c.pick_next(103 * MS + 1, Prev::Runnable, 0), Some(3 - who));
    }

    fn shares(nices: &[i32], ms: u64) -> Vec<f64> {
        let mut c = cfs();
        for (i, n) in nices.iter().enumerate() {
            let t = i as u32 + 1;
            c.fork(0, if t == 1 { None } else { Some(1) }, t);
            c.set_weight(0, t, *n, SchedPolicy::Normal);
        }
        let mut now = 0;
        simulate(&mut c, &mut now, ms);
        let total: u64 = (1..=nices.len() as u32)
            .map(|t| c.entity(t).unwrap().sum_exec_runtime)
            .sum();
        (1..=nices.len() as u32)
            .map(|t| c.entity(t).unwrap().sum_exec_runtime as f64 * 100.0 / total as f64)
            .collect()
    }

    #[test]
    fn cpu_shares_follow_the_weights() {
        let s = shares(&[0, 5], 10_000);
        assert!((s[0] - 75.35).abs() < 1.0, "{s:?}");
        let s = shares(&[0, 0, 0], 10_000);
        assert!(s.iter().all(|x| (x - 33.33).abs() < 1.0), "{s:?}");
        let s = shares(&[0, 19], 20_000);
        assert!((s[1] - 1.44).abs() < 0.5, "{s:?}");
        let s = shares(&[0, 1], 10_000);
        assert!((s[0] - 55.5).abs() < 1.0, "{s:?}");
    }

    #[test]
    fn yield_lets_a_close_second_run_and_counts_switches() {
        let mut c = cfs();
        c.fork(0, None, 1);
        c.fork(0, None, 2);
        let a = c.pick_next(0, Prev::Runnable, 0).unwrap();
        let b = 3 - a;
        let m = c.min_vruntime();
        c.get_mut(a).unwrap().vruntime = m;
        requeue(&mut c, b, m + MS / 2);
        c.yield_curr(MS / 10);
        assert_eq!(
            c.pick_next(MS / 10, Prev::Runnable, 0),
            Some(b),
            "a is skipped"
        );
        assert_eq!(c.entity(a).unwrap().nr_involuntary_switches, 1);
        assert_eq!(c.pick_next(MS / 5, Prev::Sleeping, 0), Some(a));
        assert_eq!(c.entity(b).unwrap().nr_voluntary_switches, 1);
        // Alone, yield keeps running.
        c.yield_curr(MS);
        assert_eq!(c.pick_next(MS, Prev::Runnable, 0), Some(a));
        assert_eq!(c.entity(a).unwrap().nr_involuntary_switches, 1, "no switch");
        // A second far behind is not worth the unfairness: the yielding task runs on.
        c.wake(MS, b);
        let vb = c.entity(b).unwrap().vruntime;
        c.get_mut(a).unwrap().vruntime = vb - 5 * MS;
        c.yield_curr(MS);
        assert_eq!(c.pick_next(MS, Prev::Runnable, 0), Some(a));
    }

    #[test]
    fn release_adds_times_to_the_parent() {
        let mut c = cfs();
        c.fork(0, None, 1);
        c.fork(0, Some(1), 2);
        c.pick_next(0, Prev::Runnable, 0);
        c.pick_next(0, Prev::Sleeping, 0);
        assert_eq!(c.curr(), Some(2));
        c.update_curr(5 * MS);
        assert_eq!(c.pick_next(5 * MS, Prev::Dead, MS), None);
        c.release(2, Some(1));
        let p = c.entity(1).unwrap();
        assert_eq!((p.children_utime, p.children_stime), (4 * MS, MS));
        assert!(c.entity(2).is_none());
        assert_eq!(c.nr_running(), 0);
    }
}
#[cfg(test)]
mod kernel_sequence {
    use super::*;

    /// The kernel's order of calls: init forks a shell that sleeps, which forks two children that set
    /// their nice values, sleep and then compete.
    #[test]
    fn fork_sleep_wake_then_share_by_weight() {
        let ms = 1_000_000;
        let mut c = Cfs::new(Tunables::LINUX);
        c.fork(0, None, 1);
        assert_eq!(c.pick_next(0, Prev::Runnable, 0), Some(1));
        c.fork(ms, Some(1), 2);
        assert_eq!(c.pick_next(2 * ms, Prev::Sleeping, 0), Some(2));
        c.fork(3 * ms, Some(2), 3);
        c.fork(4 * ms, Some(2), 4);
        assert_eq!(c.pick_next(5 * ms, Prev::Sleeping, 0), Some(3));
        c.set_weight(5 * ms, 3, 0, SchedPolicy::Normal);
        let p = c.pick_next(6 * ms, Prev::Sleeping, 0);
        assert_eq!(p, Some(4));
        c.set_weight(6 * ms, 4, 5, SchedPolicy::Normal);
        assert_eq!(c.pick_next(7 * ms, Prev::Sleeping, 0), None);
        c.wake(100 * ms, 3);
        c.wake(100 * ms, 4);
        let mut now = 100 * ms;
        c.pick_next(now, Prev::Runnable, 0);
        for _ in 0..1000 {
            now += 4 * ms;
            if c.tick(now) {
                c.pick_next(now, Prev::Runnable, 0);
            }
        }
        let a = c.entity_now(3, now).unwrap().sum_exec_runtime;
        let b = c.entity_now(4, now).unwrap().sum_exec_runtime;
        assert!(a > 0 && b > 0, "{a} {b}");
        assert!((a * 100 / (a + b)).abs_diff(75) <= 2, "{a} {b}");
    }
}
