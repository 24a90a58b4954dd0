//! /bin/sh: a small shell for the guest (it also runs on the host).
//!
//! Commands with arguments ('...' and "..." quoting, `$?`, `$!` and `$$`), PATH lookup, pipelines (`|`),
//! redirections (`<`, `>`, `>>`), background jobs (`&`), sequences (`;`), builtins `cd`, `exit`, `wait`,
//! and job control: `jobs`, `fg [%N]`, `bg [%N]`, `kill [-SIG] %N|PID...`.
//! Each job runs in its own process group; on a terminal the shell hands it the foreground (Ctrl-C
//! interrupts the job, Ctrl-Z stops it, not the shell) and takes it back afterwards. A stopped job is
//! listed as `[N]+ Stopped CMD` and `$?` is 128 + the stop signal, as in bash.
//! `sh -c 'LINE'` runs one line; `sh FILE` runs a script (init's /etc/rc).

use std::ffi::CString;
use std::io::Write;

struct Stage {
    argv: Vec<String>,
    input: Option<String>,
    output: Option<(String, bool)>,
}

/// A job: one pipeline, in its own process group.
struct Job {
    n: usize,
    pgid: libc::pid_t,
    /// Its processes not reaped yet; the last one's status is the job's.
    pids: Vec<libc::pid_t>,
    last_pid: libc::pid_t,
    last_status: i32,
    text: String,
    stopped: bool,
}

struct Shell {
    status: i32,
    interactive: bool,
    jobs: Vec<Job>,
    /// `$!`: the last background job's last process.
    last_bg: i32,
}

/// A signal given as `-9`, `-KILL` or `-SIGKILL`.
fn parse_signal(s: &str) -> Option<i32> {
    if let Ok(n) = s.parse() {
        return Some(n);
    }
    let name = s.strip_prefix("SIG").unwrap_or(s);
    [
        ("HUP", libc::SIGHUP),
        ("INT", libc::SIGINT),
        ("QUIT", libc::SIGQUIT),
        ("KILL", libc::SIGKILL),
        ("USR1", libc::SIGUSR1),
        ("USR2", libc::SIGUSR2),
        ("TERM", libc::SIGTERM),
        ("CONT", libc::SIGCONT),
        ("STOP", libc::SIGSTOP),
        ("TSTP", libc::SIGTSTP),
    ]
    .iter()
    .find(|(n, _)| *n == name)
    .map(|&(_, sig)| sig)
}

/// waitpid, retried when a signal interrupts it.
fn waitpid(pid: libc::pid_t, options: i32) -> (libc::pid_t, i32) {
    loop {
        let mut s = 0;
        // SAFETY: waiting for our own child with a valid status pointer.
        let r = unsafe { libc::waitpid(pid, &mut s, options) };
        if r < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
            continue;
        }
        return (r, s);
    }
}

fn tokenize(line: &str, status: i32, last_bg: i32) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut have = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                have = true;
                for d in chars.by_ref() {
                    if d == '\'' {
                        break;
                    }
                    cur.push(d);
                }
            }
            '"' => {
                have = true;
                while let Some(d) = chars.next() {
                    if d == '"' {
                        break;
                    }
                    if d == '$' && chars.peek() == Some(&'?') {
                        chars.next();
                        cur.push_str(&status.to_string());
                    } else {
                        cur.push(d);
                    }
                }
            }
            '$' if chars.peek() == Some(&'?') => {
                chars.next();
                have = true;
                cur.push_str(&status.to_string());
            }
            '$' if chars.peek() == Some(&'!') => {
                chars.next();
                have = true;
                cur.push_str(&last_bg.to_string());
            }
            '$' if chars.peek() == Some(&'$') => {
                chars.next();
                have = true;
                cur.push_str(&std::process::id().to_string());
            }
            '|' | '&' | ';' | '<' => {
                if have {
                    out.push(std::mem::take(&mut cur));
                    have = false;
                }
                out.push(c.to_string());
            }
            '>' => {
                if have {
                    out.push(std::mem::take(&mut cur));
                    have = false;
                }
                if chars.peek() == Some(&'>') {
                    chars.next();
                    out.push(">>".into());
                } else {
                    out.push(">".into());
                }
            }
            c if c.is_whitespace() => {
                if have {
                    out.push(std::mem::take(&mut cur));
                    have = false;
                }
            }
            '#' if !have => break,
            c => {
                have = true;
                cur.push(c);
            }
        }
    }
    if have {
        out.push(cur);
    }
    out
}

/// Splits a command line at `;` (sequences) and `&` (background) outside quotes and comments: one
/// list per `;` segment, each piece with whether `&` ended it. (It used to split before looking at
/// quotes, so `echo 'a;b'` ran `b`.)
fn split_commands(line: &str) -> Vec<Vec<(String, bool)>> {
    let mut segments = Vec::new();
    let mut pieces = Vec::new();
    let mut cur = String::new();
    let mut quote: Option<char> = None;
    let mut word_start = true;
    for c in line.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => {
                quote = None;
                cur.push(c);
            }
            (Some(_), c) => cur.push(c),
            (None, '\'' | '"') => {
                quote = Some(c);
                cur.push(c);
            }
            (None, '#') if word_start => break,
            (None, ';') => {
                pieces.push((std::mem::take(&mut cur), false));
                segments.push(std::mem::take(&mut pieces));
            }
            (None, '&') => pieces.push((std::mem::take(&mut cur), true)),
            (None, c) => cur.push(c),
        }
        word_start = quote.is_none() && (c.is_whitespace() || c == ';' || c == '&');
    }
    pieces.push((cur, false));
    segments.push(pieces);
    segments
}

fn parse_pipeline(tokens: &[String]) -> Result<Vec<Stage>, String> {
    let mut stages = Vec::new();
    for part in tokens.split(|t| t == "|") {
        let mut st = Stage {
            argv: Vec::new(),
            input: None,
            output: None,
        };
        let mut it = part.iter();
        while let Some(t) = it.next() {
            match t.as_str() {
                "<" => st.input = Some(it.next().ok_or("syntax error near <")?.clone()),
                ">" | ">>" => {
                    let f = it.next().ok_or("syntax error near >")?.clone();
                    st.output = Some((f, t == ">>"));
                }
                _ => st.argv.push(t.clone()),
            }
        }
        if st.argv.is_empty() {
            return Err("syntax error: empty command".into());
        }
        stages.push(st);
    }
    Ok(stages)
}

fn find_in_path(cmd: &str) -> Option<String> {
    if cmd.contains('/') {
        return Some(cmd.to_string());
    }
    let path = std::env::var("PATH").unwrap_or_else(|_| "/bin:/sbin".into());
    path.split(':')
        .map(|d| format!("{d}/{cmd}"))
        .find(|p| std::fs::metadata(p).is_ok())
}

fn is_tty(fd: i32) -> bool {
    // SAFETY: isatty only queries the descriptor.
    unsafe { libc::isatty(fd) == 1 }
}

fn set_foreground(pgid: libc::pid_t) {
    if is_tty(0) {
        // SAFETY: tcsetpgrp on our terminal; SIGTTOU is ignored by the shell.
        unsafe { libc::tcsetpgrp(0, pgid) };
    }
}

fn status_code(s: i32) -> i32 {
    if libc::WIFEXITED(s) {
        libc::WEXITSTATUS(s)
    } else if libc::WIFSIGNALED(s) {
        128 + libc::WTERMSIG(s)
    } else if libc::WIFSTOPPED(s) {
        128 + libc::WSTOPSIG(s)
    } else {
        1
    }
}

/// In the child: redirections, default signals, exec. Never returns.
fn exec_stage(st: &Stage, stdin: i32, stdout: i32, pgid: libc::pid_t) -> ! {
    // SAFETY: process setup in the freshly forked child: plain calls on its own descriptors.
    unsafe {
        libc::setpgid(0, pgid);
        for sig in [
            libc::SIGINT,
            libc::SIGQUIT,
            libc::SIGTSTP,
            libc::SIGTTOU,
            libc::SIGTTIN,
            libc::SIGPIPE,
        ] {
            libc::signal(sig, libc::SIG_DFL);
        }
        if stdin != 0 {
            libc::dup2(stdin, 0);
            libc::close(stdin);
        }
        if stdout != 1 {
            libc::dup2(stdout, 1);
            libc::close(stdout);
        }
    }
    if let Some(f) = &st.input {
        redirect(std::fs::File::open(f), 0, f);
    }
    if let Some((f, append)) = &st.output {
        let r = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .append(*append)
            .truncate(!*append)
            .open(f);
        redirect(r, 1, f);
    }
    let Some(path) = find_in_path(&st.argv[0]) else {
        eprintln!("sh: {}: not found", st.argv[0]);
        // SAFETY: leaves the child.
        unsafe { libc::_exit(127) };
    };
    let cpath = CString::new(path).unwrap();
    let args: Vec<CString> = st
        .argv
        .iter()
        .map(|a| CString::new(a.as_str()).unwrap())
        .collect();
    let mut argv: Vec<*const libc::c_char> = args.iter().map(|a| a.as_ptr()).collect();
    argv.push(std::ptr::null());
    let env: Vec<CString> = std::env::vars()
        .map(|(k, v)| CString::new(format!("{k}={v}")).unwrap())
        .collect();
    let mut envp: Vec<*const libc::c_char> = env.iter().map(|a| a.as_ptr()).collect();
    envp.push(std::ptr::null());
    // SAFETY: NUL-terminated argument and environment arrays.
    unsafe { libc::execve(cpath.as_ptr(), argv.as_ptr(), envp.as_ptr()) };
    eprintln!("sh: {}: {}", st.argv[0], std::io::Error::last_os_error());
    // SAFETY: leaves the child.
    unsafe { libc::_exit(126) }
}

impl Shell {
    fn run_pipeline(&mut self, stages: Vec<Stage>, background: bool, text: &str) {
        let _ = std::io::stdout().flush();
        let mut pids = Vec::new();
        let mut pgid = 0;
        let mut prev_read = 0;
        for (i, st) in stages.iter().enumerate() {
            let last = i + 1 == stages.len();
            let mut fds = [0, 1];
            if !last {
                // SAFETY: fds has room for two descriptors.
                unsafe { libc::pipe(fds.as_mut_ptr()) };
            }
            // SAFETY: single-threaded shell.
            let pid = unsafe { libc::fork() };
            if pid == 0 {
                if !last {
                    // SAFETY: the child does not read from its own pipe.
                    unsafe { libc::close(fds[0]) };
                }
                exec_stage(st, prev_read, if last { 1 } else { fds[1] }, pgid);
            }
            if pid < 0 {
                eprintln!("sh: fork: {}", std::io::Error::last_os_error());
                break;
            }
            if pgid == 0 {
                pgid = pid;
            }
            // SAFETY: both sides set the group so it exists whoever runs first.
            unsafe { libc::setpgid(pid, pgid) };
            pids.push(pid);
            // SAFETY: closing the parent's copies.
            unsafe {
                if prev_read != 0 {
                    libc::close(prev_read);
                }
                if !last {
                    libc::close(fds[1]);
                }
            }
            prev_read = if last { 0 } else { fds[0] };
        }
        if pids.is_empty() {
            self.status = 1;
            return;
        }
        let job = Job {
            n: self.jobs.iter().map(|j| j.n).max().unwrap_or(0) + 1,
            pgid,
            last_pid: *pids.last().unwrap(),
            pids,
            last_status: 0,
            text: text.to_string(),
            stopped: false,
        };
        if background {
            self.last_bg = job.last_pid;
            println!("[{}] {}", job.n, self.last_bg);
            self.jobs.push(job);
            self.status = 0;
            return;
        }
        self.wait_foreground(job);
    }

    /// Gives `job` the terminal and waits until it ends or stops, then takes the terminal back.
    fn wait_foreground(&mut self, mut job: Job) {
        set_foreground(job.pgid);
        let mut stop = None;
        job.pids.retain(|&p| {
            let (r, s) = waitpid(p, libc::WUNTRACED);
            if r == p && libc::WIFSTOPPED(s) {
                stop = Some(s);
                return true;
            }
            if r == p && p == job.last_pid {
                job.last_status = s;
            }
            false
        });
        // SAFETY: getpgrp has no preconditions.
        set_foreground(unsafe { libc::getpgrp() });
        if let Some(s) = stop {
            job.stopped = true;
            println!("[{}]+ Stopped {}", job.n, job.text);
            self.status = status_code(s);
            self.jobs.push(job);
            return;
        }
        let s = job.last_status;
        if libc::WIFSIGNALED(s) && libc::WTERMSIG(s) == libc::SIGINT {
            println!();
        }
        self.status = status_code(s);
    }

    /// Collects finished (and newly stopped) background jobs; `block`: waits for the running ones.
    fn reap_jobs(&mut self, block: bool) {
        let interactive = self.interactive;
        let mut last = None;
        self.jobs.retain_mut(|job| {
            if block && job.stopped {
                return true;
            }
            let mut stopped = false;
            job.pids.retain(|&p| {
                let opts = libc::WUNTRACED | if block { 0 } else { libc::WNOHANG };
                let (r, s) = waitpid(p, opts);
                if r == p && libc::WIFSTOPPED(s) {
                    stopped = true;
                    return true;
                }
                if r == p && p == job.last_pid {
                    job.last_status = s;
                }
                r == 0
            });
            if stopped && !job.stopped {
                job.stopped = true;
                if interactive {
                    println!("[{}]+ Stopped {}", job.n, job.text);
                }
            }
            if !job.pids.is_empty() {
                return true;
            }
            let s = job.last_status;
            let what = if libc::WIFSIGNALED(s) {
                format!("Killed (signal {})", libc::WTERMSIG(s))
            } else {
                format!("Done ({})", status_code(s))
            };
            if interactive || block {
                println!("[{}] {what} {}", job.n, job.text);
            }
            last = Some(status_code(s));
            false
        });
        if block {
            if let Some(s) = last {
                self.status = s;
            }
        }
    }

    /// The job `%N` names (or the most recent one without an argument).
    fn job_index(&self, spec: Option<&String>) -> Option<usize> {
        match spec {
            None => self.jobs.len().checked_sub(1),
            Some(s) => {
                let n: usize = s.strip_prefix('%').unwrap_or(s).parse().ok()?;
                self.jobs.iter().position(|j| j.n == n)
            }
        }
    }

    /// `fg`, `bg`, `jobs` and `kill` with job specs. Returns false if `words` is not one of them.
    fn job_builtin(&mut self, words: &[String]) -> bool {
        match words[0].as_str() {
            "jobs" => {
                self.reap_jobs(false);
                for j in &self.jobs {
                    let state = if j.stopped { "Stopped" } else { "Running" };
                    println!("[{}] {state} {}", j.n, j.text);
                }
                self.status = 0;
            }
            "fg" | "bg" => {
                let Some(i) = self.job_index(words.get(1)) else {
                    eprintln!("sh: {}: no such job", words[0]);
                    self.status = 1;
                    return true;
                };
                let pgid = self.jobs[i].pgid;
                if words[0] == "fg" {
                    let mut job = self.jobs.remove(i);
                    println!("{}", job.text);
                    job.stopped = false;
                    set_foreground(pgid);
                    // SAFETY: continuing our own job's process group.
                    unsafe { libc::kill(-pgid, libc::SIGCONT) };
                    self.wait_foreground(job);
                } else {
                    let job = &mut self.jobs[i];
                    job.stopped = false;
                    println!("[{}] {} &", job.n, job.text);
                    // SAFETY: as above.
                    unsafe { libc::kill(-pgid, libc::SIGCONT) };
                    self.status = 0;
                }
            }
            "kill" if words.iter().any(|w| w.starts_with('%')) => {
                let (sig, targets) = match words.get(1).and_then(|w| w.strip_prefix('-')) {
                    Some(name) => (parse_signal(name), &words[2..]),
                    None => (Some(libc::SIGTERM), &words[1..]),
                };
                let Some(sig) = sig else {
                    eprintln!("sh: kill: bad signal");
                    self.status = 1;
                    return true;
                };
                self.status = 0;
                for t in targets {
                    let r = if t.starts_with('%') {
                        match self.job_index(Some(t)) {
                            Some(i) => {
                                let j = &self.jobs[i];
                                // SAFETY: signalling our own job's process group.
                                let r = unsafe { libc::kill(-j.pgid, sig) };
                                // As bash: a stopped job is continued so that it sees the signal.
                                if j.stopped && sig != libc::SIGKILL && sig != libc::SIGCONT {
                                    // SAFETY: as above.
                                    unsafe { libc::kill(-j.pgid, libc::SIGCONT) };
                                }
                                r
                            }
                            None => -1,
                        }
                    } else {
                        match t.parse() {
                            // SAFETY: kill with a pid the user gave.
                            Ok(pid) => unsafe { libc::kill(pid, sig) },
                            Err(_) => -1,
                        }
                    };
                    if r < 0 {
                        eprintln!("sh: kill: {t}: no such job or process");
                        self.status = 1;
                    }
                }
            }
            _ => return false,
        }
        true
    }

    fn run_line(&mut self, line: &str) -> bool {
        // `$?` and `$!` are expanded per command, so each `;` / `&` part is tokenized in its turn.
        for pieces in split_commands(line) {
            for (piece, background) in pieces {
                let piece = piece.as_str();
                let words = tokenize(piece, self.status, self.last_bg);
                if words.is_empty() {
                    continue;
                }
                match words[0].as_str() {
                    "exit" => {
                        if let Some(n) = words.get(1) {
                            self.status = n.parse().unwrap_or(2);
                        }
                        return false;
                    }
                    "cd" => {
                        let dir = words.get(1).map(String::as_str).unwrap_or("/");
                        self.status = match std::env::set_current_dir(dir) {
                            Ok(()) => 0,
                            Err(e) => {
                                eprintln!("sh: cd: {dir}: {e}");
                                1
                            }
                        };
                        continue;
                    }
                    "wait" => {
                        self.status = 0;
                        self.reap_jobs(true);
                        continue;
                    }
                    _ => {
                        if self.job_builtin(&words) {
                            continue;
                        }
                    }
                }
                match parse_pipeline(&words) {
                    Ok(stages) => {
                        let text = words.join(" ");
                        self.run_pipeline(stages, background, &text);
                    }
                    Err(e) => {
                        eprintln!("sh: {e}");
                        self.status = 2;
                    }
                }
            }
        }
        true
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let interactive = args.len() == 1 && is_tty(0);
    let mut sh = Shell {
        status: 0,
        interactive,
        jobs: Vec::new(),
        last_bg: 0,
    };
    if interactive {
        // SAFETY: the shell ignores the job-control and interrupt signals its jobs get.
        unsafe {
            for sig in [
                libc::SIGINT,
                libc::SIGQUIT,
                libc::SIGTSTP,
                libc::SIGTTOU,
                libc::SIGTTIN,
            ] {
                libc::signal(sig, libc::SIG_IGN);
            }
            libc::setpgid(0, 0);
        }
        // SAFETY: getpgrp has no preconditions.
        set_foreground(unsafe { libc::getpgrp() });
    }
    if args.len() >= 3 && args[1] == "-c" {
        sh.run_line(&args[2]);
        std::process::exit(sh.status);
    }
    if args.len() >= 2 {
        match std::fs::read_to_string(&args[1]) {
            Ok(script) => {
                for line in script.lines() {
                    if !sh.run_line(line) {
                        break;
                    }
                }
                sh.reap_jobs(true);
            }
            Err(e) => {
                eprintln!("sh: {}: {e}", args[1]);
                std::process::exit(127);
            }
        }
        std::process::exit(sh.status);
    }
    let mut pending = Vec::new();
    loop {
        sh.reap_jobs(false);
        if interactive {
            print!("# ");
            let _ = std::io::stdout().flush();
        }
        let line = loop {
            if let Some(i) = pending.iter().position(|&b| b == b'\n') {
                let l: Vec<u8> = pending.drain(..=i).collect();
                break Some(String::from_utf8_lossy(&l[..l.len() - 1]).into_owned());
            }
            let mut buf = [0u8; 512];
            // SAFETY: reading into buf.
            let n = unsafe { libc::read(0, buf.as_mut_ptr().cast(), buf.len()) };
            if n < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            if n <= 0 {
                break if pending.is_empty() {
                    None
                } else {
                    Some(String::from_utf8_lossy(&std::mem::take(&mut pending)).into_owned())
                };
            }
            pending.extend_from_slice(&buf[..n as usize]);
        };
        let Some(line) = line else { break };
        if !sh.run_line(&line) {
            break;
        }
    }
    std::process::exit(sh.status);
}

/// In a child about to exec: moves the opened `file` onto descriptor `target`, or reports why `name`
/// could not be opened and leaves the child with status 1.
fn redirect(file: std::io::Result<std::fs::File>, target: i32, name: &str) {
    use std::os::fd::IntoRawFd;
    match file {
        Ok(file) => {
            let fd = file.into_raw_fd();
            // SAFETY: moving a descriptor we own onto `target`.
            unsafe {
                libc::dup2(fd, target);
                libc::close(fd);
            }
        }
        Err(e) => {
            eprintln!("sh: {name}: {e}");
            // SAFETY: leaves the child.
            unsafe { libc::_exit(1) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::split_commands;

    fn shape(line: &str) -> Vec<Vec<(&str, bool)>> {
        let v = split_commands(line);
        let v: &'static Vec<Vec<(String, bool)>> = Box::leak(Box::new(v));
        v.iter()
            .map(|s| s.iter().map(|(p, b)| (p.trim(), *b)).collect())
            .collect()
    }

    #[test]
    fn separators_inside_quotes_stay() {
        assert_eq!(
            shape("echo 'a;b' \"c&d\""),
            vec![vec![("echo 'a;b' \"c&d\"", false)]]
        );
        assert_eq!(
            shape("sleep 1 & echo x; echo y"),
            vec![
                vec![("sleep 1", true), ("echo x", false)],
                vec![("echo y", false)]
            ]
        );
        assert_eq!(shape("echo a # b; c"), vec![vec![("echo a", false)]]);
        assert_eq!(shape("echo a#b"), vec![vec![("echo a#b", false)]]);
    }
}
