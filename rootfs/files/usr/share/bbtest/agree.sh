# Do busybox's system tools show what the kernel reports? free, top, ps, df and uptime against
# /proc (meminfo, loadavg, uptime, PID/stat, status, statm, cmdline, comm) and statfs (stat -f).
# Each line says "ok" or both figures; tests/tests/guest_busybox.rs runs this with the host's
# busybox and in the guest and requires the same lines (all "ok"). Figures that move while they are
# read are compared within 1% of RAM and 4 MiB (a tool's own pages come and go with it: top's are
# about 2 MiB in the guest; the host is busy).
exec 2>&1
mi() { v=$(awk -v k="$1:" '$1 == k { print $2 }' /proc/meminfo); echo "${v:-0}"; }
total=$(mi MemTotal)
tol=$((total / 100 + 4096))
near() {
    d=$(($2 - $3))
    [ $d -lt 0 ] && d=$((-d))
    if [ $d -le $tol ]; then echo "$1: ok"; else echo "$1: $2 vs $3"; fi
}
same() { if [ "$2" = "$3" ]; then echo "$1: ok"; else echo "$1: '$2' vs '$3'"; fi; }
one_of() { if [ "$2" = "$3" ] || [ "$2" = "$4" ]; then echo "$1: ok"; else echo "$1: '$2' vs '$3' or '$4'"; fi; }
loads() { cut -d' ' -f1-3 /proc/loadavg; }

echo "== free"
# busybox free: sysinfo for total, free, shared and buffers; /proc/meminfo for Cached,
# SReclaimable and MemAvailable.
set -- $(free | awk '$1 == "Mem:" { print $2, $3, $4, $5, $6, $7 }')
same "free total is MemTotal" "$1" "$total"
near "free free is MemFree" "$3" "$(mi MemFree)"
near "free shared is Shmem" "$4" "$(mi Shmem)"
near "free buff/cache is Buffers + Cached + SReclaimable" "$5" "$(($(mi Buffers) + $(mi Cached) + $(mi SReclaimable)))"
near "free available is MemAvailable" "$6" "$(mi MemAvailable)"
same "free used is total - free - buff/cache" "$2" "$(($1 - $3 - $5))"
set -- $(free | awk '$1 == "Swap:" { print $2, $3, $4 }')
same "free swap total is SwapTotal" "$1" "$(mi SwapTotal)"
near "free swap free is SwapFree" "$3" "$(mi SwapFree)"

echo "== top"
# "Mem: 4748292K used, 19935480K free, 10304K shrd, 11528K buff, 4204756K cached" from
# /proc/meminfo, "CPU: ..." from /proc/stat, "Load average: ..." from /proc/loadavg.
before=$(loads)
out=$(top -n 1 -b)
after=$(loads)
set -- $(echo "$out" | awk '$1 == "Mem:" { print $2, $4, $6, $8, $10 }' | tr -d K)
same "top used + free is MemTotal" "$(($1 + $2))" "$total"
near "top free is MemFree" "$2" "$(mi MemFree)"
near "top shrd is Shmem" "$3" "$(mi Shmem)"
near "top buff is Buffers" "$4" "$(mi Buffers)"
near "top cached is Cached" "$5" "$(mi Cached)"
cpu=$(echo "$out" | awk '$1 == "CPU:" { for (i = 2; i <= NF; i += 2) s += $i; print (s >= 96 && s <= 104) ? "yes" : s }')
same "top CPU shares add up to 100%" "$cpu" yes
one_of "top load average is /proc/loadavg's" "$(echo "$out" | awk '$1 == "Load" { print $3, $4, $5 }')" "$before" "$after"
echo "$out" | awk -v p=$$ '$1 == p { found = 1 } END { print "top lists this shell: " (found ? "ok" : "no") }'

echo "== ps"
# A sleeping background job, against its /proc files (the fields of stat from the state on).
sleep 1000 &
p=$!
sleep 1
set -- $(ps -o pid,ppid,pgid,nice,vsz,rss,stat,comm | awk -v p=$p '$1 == p')
st=$(sed 's/.*) //' /proc/$p/stat)
field() { echo "$st" | cut -d' ' -f"$1"; }
status() { awk -v k="$1:" '$1 == k { print $2 }' /proc/$p/status; }
same "ps ppid is stat's and the shell" "$2 $2" "$(field 2) $$"
same "ps pgid is stat's" "$3" "$(field 3)"
same "ps nice is stat's" "$4" "$(field 17)"
# ps prints sizes past 9999 kB in MiB ("10m"), rounded down.
vsz=$(status VmSize)
[ "$vsz" -gt 9999 ] && vsz="$((vsz / 1024))m"
same "ps vsz is VmSize" "$5" "$vsz"
near "ps rss is VmRSS" "$6" "$(status VmRSS)"
same "ps stat is status State" "$7" "$(status State)"
same "ps comm is /proc/PID/comm" "$8" "$(cat /proc/$p/comm)"
same "ps args is /proc/PID/cmdline" "$(ps -o pid,args | awk -v p=$p '$1 == p { $1 = ""; print substr($0, 2) }')" "$(tr '\0' ' ' < /proc/$p/cmdline | sed 's/ $//')"
set -- $(cat /proc/$p/statm)
same "statm size and resident are VmSize and VmRSS" "$(($1 * 4)) $(($2 * 4))" "$(status VmSize) $(status VmRSS)"
# Ended by SIGPIPE, which ash does not report (a "Terminated" would come at a time of its choosing).
kill -PIPE $p
wait $p
same "the job's status after SIGPIPE" "$?" 141

echo "== df"
set -- $(df -P -k / | awk 'NR == 2 { print $2, $3, $4 }') $(stat -f -c '%b %f %a %S' /)
same "df 1K-blocks is statfs f_blocks" "$1" "$(($4 * $7 / 1024))"
near "df used is f_blocks - f_bfree" "$2" "$((($4 - $5) * $7 / 1024))"
near "df available is f_bavail" "$3" "$(($6 * $7 / 1024))"

echo "== uptime"
# The time up as busybox prints it from sysinfo (rounded up to a second), from /proc/uptime.
up() {
    awk '{ s = int($1 + 1); d = int(s / 86400); m = int(s / 60); h = int(m / 60) % 24; m %= 60
           o = d ? d " day" (d != 1 ? "s" : "") ", " : ""
           print o (h ? sprintf("%2d:%02d", h, m) : m " min") }' /proc/uptime
}
before_up=$(up)
before=$(loads)
out=$(uptime)
after=$(loads)
after_up=$(up)
one_of "uptime's time up is /proc/uptime's" "$(echo "$out" | sed 's/.* up \(.*\),  *[0-9]* users*,.*/\1/')" "$before_up" "$after_up"
# busybox truncates the averages to 2 decimals, /proc/loadavg rounds them: 0.01 apart at most.
la=$(echo "$out" | sed 's/.*load average: //; s/,//g')
close() { echo "$1 $2" | awk '{ for (i = 1; i <= 3; i++) if ($(i + 3) - $i > 0.011 || $i > $(i + 3)) bad = 1; print bad ? "no" : "yes" }'; }
r="$(close "$la" "$before")$(close "$la" "$after")"
if [ "$r" = nono ]; then
    echo "uptime's load average is /proc/loadavg's: '$la' vs '$before' or '$after'"
else
    echo "uptime's load average is /proc/loadavg's: ok"
fi
echo "== done"
