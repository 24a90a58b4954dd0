# Mounts in the guest (tests/tests/guest_fs.rs): an ext2 made on the host on /dev/vdb at /mnt, written,
# read through the page cache while the file and the disk under it change, remounted read-only and
# back, busy and unmounted; a small tmpfs filled to its size=; the boot tmpfs on /tmp. Run by busybox sh; the test compares the lines and checks /dev/vdb on the host afterwards.
shmem() { grep Shmem: /proc/meminfo | awk '{print "shmem " $2}'; }
echo "== boot mounts"
cat /proc/mounts
echo "== mount vdb"
mount -t ext2 /dev/vdb /mnt && echo "mounted"
cat /mnt/hello.txt
grep ' /mnt ' /proc/self/mounts
echo guest-data > /mnt/new.txt
mkdir /mnt/dir && echo nested > /mnt/dir/f && echo "wrote"
cd /mnt/dir && cd ../.. && pwd && cd /
stat -c 'dev %t:%T %D' /mnt/dir/f
echo "== cache"
# $1: the 1 KiB block of /blk.txt on /dev/vdb (the host's debugfs found it).
cat /mnt/blk.txt
[ "$(grep '^Cached:' /proc/meminfo | awk '{print $2}')" -ge 4 ] && echo "cached"
printf 'CHANGED' | dd of=/mnt/hello.txt bs=1 seek=5 conv=notrunc 2>/dev/null
cat /mnt/hello.txt
truncate -s 4 /mnt/hello.txt && cat /mnt/hello.txt && echo
printf 'written through /dev/vdb' | dd of=/dev/vdb bs=1024 seek="$1" conv=notrunc 2>/dev/null
cat /mnt/blk.txt
echo "== exdev"
ln /mnt/new.txt /tmp/link 2>&1
mv /mnt/dir /tmp/dir 2>&1 && echo "mv copied across"
ls /mnt /tmp | tr '\n' ' '; echo
mv /tmp/dir /mnt/dir && echo "moved back"
echo "== remount"
mount -o remount,ro /mnt && grep ' /mnt ' /proc/mounts
(echo x > /mnt/ro.txt) 2>&1 | grep -o 'Read-only file system'
[ -e /mnt/ro.txt ] || echo "write refused"
mount -o remount,rw /mnt && echo rw-again > /mnt/rw.txt && cat /mnt/rw.txt
echo "== df"
df /mnt | tail -1
echo "== busy"
exec 3< /mnt/hello.txt
umount /mnt 2>&1 || echo "umount refused"
exec 3<&-
umount /mnt && echo "unmounted"
ls -A /mnt | wc -l
# The disk changes while nothing is mounted from it: mounted again, it shows the change.
printf 'while unmounted' | dd of=/dev/vdb bs=1024 seek="$1" conv=notrunc 2>/dev/null
mount -t ext2 /dev/vdb /mnt && cat /mnt/blk.txt && umount /mnt
echo "== tmpfs"
shmem
mount -t tmpfs -o size=64k,mode=700 scratch /mnt && grep ' /mnt ' /proc/mounts
dd if=/dev/zero of=/mnt/big bs=4096 count=20 2>&1 | grep -o 'No space left on device'
ls -l /mnt/big | awk '{print "size " $5}'
df /mnt | tail -1
shmem
exec 4< /mnt/big
rm /mnt/big
shmem
exec 4<&-
shmem
umount /mnt && echo "tmpfs unmounted"
echo "== /tmp"
cd /tmp && mkdir -p d/e && echo hi > d/e/f && mv d/e/f d/g && ln -s d/g l && cat l && ls d | tr '\n' ' '; echo
truncate -s 10000000 sparse && ls -ls sparse | awk '{print "sparse " $1 " " $6}'
cd / && rm -r /tmp/d /tmp/l /tmp/sparse && ls -A /tmp | wc -l
shmem
echo "== done"
