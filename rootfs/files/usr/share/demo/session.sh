# The busybox session scripts/demo.sh shows when it is not run on a terminal (on one, it gives you
# busybox's ash on the console instead).
set -x
uname -a
date
cat /proc/version
free
ps
top -n 1 -b | head -8
ls /bin | head -5; ls /bin | wc -l
sleep 1 & wait; echo "background sleep done: $?"
seq 1 100 | awk '{ s += $1 } END { print "sum", s }'
find /usr/share/bbtest -type f | sort | xargs md5sum
uptime
