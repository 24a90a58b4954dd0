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
echo "== done"
