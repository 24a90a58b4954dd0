# Memory pressure (tests/tests/guest_fs.rs, a 64 MiB guest): clean page-cache pages give way to a
# process that needs the memory: the out-of-memory path evicts them (writing dirty ones back first)
# before it kills anyone, so the hog gets more than the free memory and the cache shrinks; what was
# evicted reads back the same from the disk. Run by busybox sh.
cached() { awk '/^Cached:/ {print $2}' /proc/meminfo; }
md5sum /srv/big.bin /bin/busybox | cut -c1-32 > /tmp/sum1
echo "dirty data, written before the pressure" > /root/pressure.txt
echo "cached-before $(cached)"
memtest hog
echo "hog=$?"
echo "cached-after $(cached)"
echo "dirty-after $(awk '/^Dirty:/ {print $2}' /proc/meminfo)"
md5sum /srv/big.bin /bin/busybox | cut -c1-32 > /tmp/sum2
cmp -s /tmp/sum1 /tmp/sum2 && echo "the evicted files read the same"
cat /root/pressure.txt
echo "== done"
