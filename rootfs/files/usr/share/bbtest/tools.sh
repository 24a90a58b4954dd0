# The system tools whose fields tests/tests/guest_busybox.rs checks (they read /proc and sysinfo).
echo "== free"
free
echo "== ps"
ps
echo "== top"
top -n 1 -b
echo "== uptime"
uptime
echo "== fd"
ls /proc/self/fd | sort -n | tr '\n' ' '; echo
readlink /proc/self/fd/0
readlink /proc/self/exe
readlink /proc/self/cwd
echo "== exe"
# /proc/PID/exe is the executable's canonical path, however it was started: through an applet link,
# a relative path with `..`, a symbolic link of its own (on the /tmp tmpfs).
/bin/sh -c 'readlink /proc/$$/exe'
cd /usr && ../bin/../bin/ash -c 'readlink /proc/$$/exe'
ln -s /bin/busybox /tmp/sh && cd /tmp && ./sh -c 'readlink /proc/$$/exe'
ln -s /usr/share/bbtest /tmp/tests && cd /tmp/tests && readlink /proc/self/cwd
cd /
echo "== dev"
# ls /dev lists the device nodes (as devtmpfs would); each listed name exists.
ls /dev | tr '\n' ' '; echo
for f in $(ls /dev); do [ -e "/dev/$f" ] || echo "missing /dev/$f"; done
ls -l /dev/null /dev/tty /dev/vda | cut -c1
echo "== clock"
# Setting the wall clock (clock_settime by root), then reading it back.
date -u -s @2000000000 > /dev/null && date -u +%s
echo "== done"
