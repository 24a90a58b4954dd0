# The system tools whose fields tests/tests/guest_busybox.rs checks (they read /proc and sysinfo).
echo "== free"
free
echo "== ps"
ps
echo "== top"
top -n 1 -b
echo "== uptime"
uptime
echo "== done"
