/* A block device read and written under its mounted ext2 filesystem (tests/tests/guest_fs.rs):
 *
 *   bdevmeta SRC DST MNT   mounts SRC (ext2) at MNT, makes a directory of files (some renamed or
 *                          deleted) and, without any sync, reads SRC: its superblock counts agree
 *                          with statfs, and SRC is copied whole onto DST (the test checks the copy
 *                          with e2fsck and debugfs: the files, inodes, directories and bitmaps just
 *                          written must be in it). Then it writes a file's inode (its owner)
 *                          through SRC and stats the file: the filesystem sees the new owner.
 *
 * Guest only: the host here cannot mount an ext2 image (no loop devices). On Linux the copy holds
 * the metadata as written (it lives in the block device's buffer cache) but not the file data
 * still dirty in the files' page caches; this kernel writes both back before a read of the device.
 */
#define PROG "bdevmeta"
#include "common.h"
#include <stdint.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statfs.h>

static uint32_t le32(const unsigned char *b) {
    return b[0] | b[1] << 8 | b[2] << 16 | (uint32_t)b[3] << 24;
}

static uint16_t le16(const unsigned char *b) {
    return (uint16_t)(b[0] | b[1] << 8);
}

/* The device offset of inode `ino`'s record, from SRC's superblock and group descriptors. */
static off_t inode_pos(int dev, uint32_t ino) {
    unsigned char sb[1024], gd[32];
    if (pread(dev, sb, sizeof sb, 1024) != (ssize_t)sizeof sb)
        die("read superblock");
    uint32_t bs = 1024u << le32(sb + 24), ipg = le32(sb + 40), first = le32(sb + 20);
    uint32_t isz = le32(sb + 76) >= 1 ? le16(sb + 88) : 128;
    uint32_t group = (ino - 1) / ipg, index = (ino - 1) % ipg;
    if (pread(dev, gd, sizeof gd, (off_t)(first + 1) * bs + group * 32) != (ssize_t)sizeof gd)
        die("read group descriptor");
    return (off_t)le32(gd + 8) * bs + (off_t)index * isz;
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc != 4) {
        fprintf(stderr, "usage: bdevmeta SRC DST MNT\n");
        return 2;
    }
    const char *src = argv[1], *dst = argv[2], *mnt = argv[3];
    if (mount(src, mnt, "ext2", 0, NULL))
        die("mount");
    char path[512], other[512];
    snprintf(path, sizeof path, "%s/d", mnt);
    if (mkdir(path, 0755))
        die("mkdir");
    for (int k = 0; k < 40; k++) {
        snprintf(path, sizeof path, "%s/d/f%02d", mnt, k);
        int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd < 0)
            die("create");
        for (int r = 0; r < k; r++)
            dprintf(fd, "file %02d line %02d\n", k, r);
        close(fd);
    }
    snprintf(path, sizeof path, "%s/d/f05", mnt);
    if (unlink(path))
        die("unlink");
    snprintf(path, sizeof path, "%s/d/f01", mnt);
    snprintf(other, sizeof other, "%s/d/g01", mnt);
    if (rename(path, other))
        die("rename");
    snprintf(path, sizeof path, "%s/d/link", mnt);
    if (symlink("f20", path))
        die("symlink");

    /* No sync: the device read itself must show the metadata. */
    int in = open(src, O_RDWR);
    if (in < 0)
        die("open src");
    struct statfs st;
    unsigned char sb[1024];
    if (statfs(mnt, &st) || pread(in, sb, sizeof sb, 1024) != (ssize_t)sizeof sb)
        die("statfs / read superblock");
    printf("bdevmeta: superblock free inodes agree with statfs: %d\n",
           le32(sb + 16) == (uint32_t)st.f_ffree);
    printf("bdevmeta: superblock free blocks agree with statfs: %d\n",
           le32(sb + 12) * (1024u << le32(sb + 24)) / st.f_bsize == (uint32_t)st.f_bfree);

    int out = open(dst, O_WRONLY);
    if (out < 0)
        die("open dst");
    off_t size = lseek(in, 0, SEEK_END);
    static char buf[64 * 1024];
    for (off_t at = 0; at < size; at += sizeof buf) {
        if (pread(in, buf, sizeof buf, at) != (ssize_t)sizeof buf ||
            pwrite(out, buf, sizeof buf, at) != (ssize_t)sizeof buf)
            die("copy");
    }
    if (fsync(out))
        die("fsync dst");
    close(out);
    printf("bdevmeta: copied %ld KiB\n", (long)(size / 1024));

    /* The inode written through the device: the filesystem sees it. */
    struct stat fst;
    snprintf(path, sizeof path, "%s/d/f02", mnt);
    if (stat(path, &fst))
        die("stat");
    off_t pos = inode_pos(in, (uint32_t)fst.st_ino);
    unsigned char uid[2];
    if (pread(in, uid, 2, pos + 2) != 2)
        die("read inode");
    printf("bdevmeta: the inode on the device has stat's owner: %d\n", le16(uid) == fst.st_uid);
    uid[0] = 4242 & 0xff;
    uid[1] = 4242 >> 8;
    if (pwrite(in, uid, 2, pos + 2) != 2)
        die("write inode");
    if (stat(path, &fst))
        die("stat again");
    printf("bdevmeta: after writing its owner through the device, stat says %u\n",
           (unsigned)fst.st_uid);
    snprintf(path, sizeof path, "%s/d/f30", mnt);
    int fd = open(path, O_RDONLY);
    char line[32] = {0};
    if (fd < 0 || pread(fd, line, 16, 16 * 3) != 16)
        die("read f30");
    close(fd);
    printf("bdevmeta: a file reads the same after the device write: %.15s\n", line);
    close(in);
    printf("bdevmeta: umount %s\n", umount(mnt) ? strerror(errno) : "ok");
    printf("bdevmeta: done\n");
    return 0;
}
