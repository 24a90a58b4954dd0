# console.sh: init's terminal and its child's, run as `init -- run /bin/busybox sh THIS`
# (tests/tests/guest_processes.rs). As on Linux, the kernel opens /dev/console for PID 1 and opening
# /dev/console never makes a controlling terminal, so init has none; init gives this shell a session
# on the console's own device (the first of /proc/consoles), led by init's child (this shell's
# parent), the shell's own process group in the foreground.
echo "init fd 0: $(readlink /proc/1/fd/0)"
echo "init fd 1: $(readlink /proc/1/fd/1)"
echo "init fd 2: $(readlink /proc/1/fd/2)"
# /proc/PID/stat: pid (comm) state ppid pgrp session tty_nr tpgid ...
set -- $(cat /proc/1/stat)
echo "init tty_nr: $7 tpgid: $8"
set -- $(cat /proc/$$/stat)
echo "shell pid: $1 pgrp: $5 session: $6 tty_nr: $7 tpgid: $8"
echo "session led by the shell's parent: $(test $6 = $4 && echo yes), not init: $(test $4 != 1 && echo yes)"
echo "shell fd 0: $(readlink /proc/$$/fd/0)"
echo "tty: $(tty)"
echo "consoles: $(cat /proc/consoles)"
# A new session's leader opening /dev/console gets no controlling terminal from it.
setsid sh -c 'exec 3</dev/console; set -- $(cat /proc/$$/stat); echo "new session opened /dev/console: session leader $(test $1 = $6 && echo yes) tty_nr: $7"'
echo "console.sh done"
