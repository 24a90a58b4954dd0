# Busybox checks whose output must be the same on the host and in the guest
# (tests/tests/guest_busybox.rs runs this with the host's busybox and with the guest's).
# $1: the root of the tree: / in the guest, build/rootfs-stage on the host.
exec 2>/dev/null
cd "$1/usr/share/bbtest/tree" || exit 1
echo "== sleep in the background, wait"
sleep 1 & wait; echo "status $?"
echo "== exit statuses"
(exit 3); echo "subshell $?"
false | true; echo "pipeline $?"
sh -c 'kill -9 $$'; echo "killed $?"
# SIGPIPE's default action (init must not hand down the ignoring its Rust runtime set up).
sh -c 'kill -PIPE $$'; echo "SIGPIPE $?"
yes | head -2
echo "== pipes"
printf 'b\na\nc\na\nb\na\n' | sort | uniq -c
seq 1 1000 | grep 7 | wc -l
cat a.txt | tr a-z A-Z | sed 's/^/> /'
echo "== here-documents"
name=world
cat <<EOT
hello $name
$(echo nested) $((6 * 7))
EOT
cat <<'EOT'
literal $name
EOT
echo "== redirections through pipes"
{ echo out; echo err >&2; } 2>&1 | sort
exec 3>&1; echo "to fd 3" >&3; exec 3>&-
echo "== find"
find . | sort
find . -type f -name '*.txt' | sort
echo "== tar"
tar c . | tar t | sort
echo "== md5sum"
find . -type f | sort | xargs md5sum
echo "== awk, sort, head, tail"
awk '{ s += $1 } END { print s, NR }' sub/deeper/numbers.txt
sort -rn sub/deeper/numbers.txt | head -3
tail -2 a.txt
wc -w sub/b.txt
echo "== devices"
dd if=/dev/zero bs=1024 count=4 | md5sum
head -c 1000 /dev/urandom | wc -c
head -c 16 /dev/random | od -A n -t x1 | wc -w
echo x > /dev/full; echo "full $?"
cat /dev/null | wc -c
echo "== /proc/PID/cmdline and environ past 4 KiB, read from the process's memory"
/bin/busybox sh -c 'tr "\0" "\n" < /proc/$$/cmdline | tail -2; cat /proc/$$/cmdline | wc -c' sh $(seq 1 2000)
big=$(printf '%06000d' 7)
# (the guest kernel adds GLIBC_TUNABLES for glibc programs: guest-kernel/README.md says why)
env -i A="$big" B=2 /bin/busybox sh -c 'tr "\0" "\n" < /proc/$$/environ | grep -v ^GLIBC_TUNABLES= | cut -c 1-8; tr "\0" "\n" < /proc/$$/environ | grep -v ^GLIBC_TUNABLES= | wc -c'
echo "== each pipe its own inode"
p1=$(: | stat -L -c %i /proc/self/fd/0)
p2=$(: | stat -L -c %i /proc/self/fd/0)
p3=$(: | stat -L -c %i /proc/self/fd/0 /proc/self/fd/1 | sort -u | wc -l)
[ "$p1" != "$p2" ] && echo "two pipelines, two inodes"
echo "stdin and stdout pipes: $p3 inodes"
echo "== functions and loops"
f() { echo "f got $# args: $*"; return 4; }
f a 'b c' d; echo "f returned $?"
i=0; while [ $i -lt 5 ]; do i=$((i + 1)); done; echo "i=$i"
for w in $(cat sub/b.txt); do printf '%s,' "$w"; done; echo
case "abc" in a*) echo "case matched";; esac
echo "== done"
