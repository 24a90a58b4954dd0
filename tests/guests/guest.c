/* A tiny guest for testing the VMM before (and beside) the real guest kernel.
 *
 * It prints what the VMM told it (boot protocol, command line, memory map, initrd), then does what its
 * command line asks, in this order:
 *   ticks=N     take N timer interrupts from the PIT through the PIC (LAPIC LINT0 in ExtINT mode)
 *   unknown-io  read an unhandled port and MMIO address (the VMM must answer all ones)
 *   netnorx     set up the first virtio-net device without receive buffers (virtio_net.c), go on
 *   echo        read one line from the serial port and print it back
 *   marker      write the boot-time marker port
 *   triple      triple-fault (empty IDT, then #UD)
 *   badinsn     run an instruction KVM's emulator cannot handle (dies here on emulating hosts)
 *   blkread=S   read sector S of the first virtio-blk disk (virtio_blk.c)
 *   blkwrite=S  write and flush sector S of the first virtio-blk disk (virtio_blk.c)
 *   blkloop=N   write sectors 1..N of the first virtio-blk disk in turn, printing each completion
 *   blkbulk=N   read N 64 KiB requests of the first virtio-blk disk, between two marker lines
 *   netbad      hand the first virtio-net device malformed chains (virtio_net.c)
 *   vsockbad    hand the first virtio-vsock device bad packets and bogus credit (virtio_vsock.c)
 *   netecho     answer ARP, ICMP echo and UDP on the first virtio-net device until a datagram to port 9
 *               (virtio_net.c, with its options netip=, netbuf=, netnomrg)
 *   count       print "count N" every 10 timer ticks, forever; keyboard bytes (IRQ 1, port 0x60) are
 *               collected, and the Ctrl-Alt-Del sequence 14 11 e0 71 ends the guest with status 57
 *   memwalk     with count: before printing count N, write N+1 into counter page (N+1) % 64 (pages 64 KiB
 *               apart) and have the first virtio-blk disk read its sector (N+1) % 8192 into read page
 *               (N+1) % 64 (the device writes those pages, the guest never does), then check all 128
 *               pages against what the counts so far must have left there; a mismatch prints
 *               "memwalk: bad ..." and exits with status 66. Prints "memwalk: pages at 0xADDR" first.
 *               Sector S of the disk must hold S in each of its 64-bit words.
 *   reset       reset through the i8042
 *   halt        stay alive forever (halted, interrupts off)
 *   exit=N      leave through the debug-exit port with status N (default 0)
 */
#include <stdint.h>

#define SERIAL 0x3f8
#define DEBUG_EXIT 0xf4
#define BOOT_MARKER 0x3f0

static inline void outb(uint16_t port, uint8_t v) { __asm__ volatile("outb %0, %1" ::"a"(v), "Nd"(port)); }
static inline uint8_t inb(uint16_t port) { uint8_t v; __asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"(port)); return v; }

static void putc_(char c) {
    while (!(inb(SERIAL + 5) & 0x20)) {}
    outb(SERIAL, (uint8_t)c);
}
static void puts_(const char *s) { while (*s) putc_(*s++); }
static void putu(uint64_t v) {
    char buf[21];
    int i = 20;
    buf[i] = 0;
    do { buf[--i] = (char)('0' + v % 10); v /= 10; } while (v);
    puts_(&buf[i]);
}
static void puthex(uint64_t v) {
    const char *d = "0123456789abcdef";
    char buf[17];
    int i = 16;
    buf[i] = 0;
    do { buf[--i] = d[v & 15]; v >>= 4; } while (v);
    puts_(&buf[i]);
}

static const char *cmdline = "";

/* The value after "key=" in the command line, or the start of the token "key" (then *v is 0), or 0. */
static const char *find(const char *key) {
    const char *p = cmdline;
    while (*p) {
        while (*p == ' ') p++;
        const char *k = key, *t = p;
        while (*k && *t == *k) { k++; t++; }
        if (!*k && (*t == ' ' || *t == 0 || *t == '=')) return *t == '=' ? t + 1 : t;
        while (*p && *p != ' ') p++;
    }
    return 0;
}
static uint64_t number(const char *s) {
    uint64_t v = 0;
    while (*s >= '0' && *s <= '9') v = v * 10 + (uint64_t)(*s++ - '0');
    return v;
}

static void die(uint8_t code) {
    outb(DEBUG_EXIT, code);
    for (;;) __asm__ volatile("hlt");
}

/* For virtio_blk.c. */
void blk_write(uint64_t sector);
void blk_read(uint64_t sector);
void blk_loop(uint64_t count);
void blk_bulk(uint64_t count);
void blk_read_to(uint64_t sector, uint8_t *buf);
void blk_puts(const char *s) { puts_(s); }
void blk_puthex(uint64_t v) { puthex(v); }
void blk_die(uint8_t code) { die(code); }

/* For virtio_net.c. */
void net_command(const char *cmdline, int what);
/* virtio_vsock.c */
void vsock_command(const char *cmdline);
void net_puts(const char *s) { puts_(s); }
void net_putu(uint64_t v) { putu(v); }
void net_die(uint8_t code) { die(code); }
const char *net_find(const char *key) { return find(key); }

/* --- interrupts ----------------------------------------------------------------------------------- */
struct idt_entry { uint16_t off0, sel; uint8_t ist, flags; uint16_t off1; uint32_t off2, zero; };
static struct idt_entry idt[256];
static struct { uint16_t limit; uint64_t base; } __attribute__((packed)) idt_ptr;
extern void irq0_stub(void), irq1_stub(void), unexpected_stub(void), emulation_failure(void), load_idt(void *);
static volatile uint64_t ticks;
static volatile uint8_t keys[16];
static volatile int nkeys;

void on_tick(void) {
    ticks++;
    outb(0x20, 0x20); /* EOI to the master PIC */
}
void on_key(void) {
    while (inb(0x64) & 1) {
        uint8_t b = inb(0x60);
        if (nkeys < 16) keys[nkeys++] = b;
    }
    outb(0x20, 0x20);
}
void on_unexpected(void) {
    puts_("unexpected exception\n");
    die(99);
}

static void set_gate(int v, void (*f)(void)) {
    uint64_t a = (uint64_t)f;
    idt[v] = (struct idt_entry){(uint16_t)a, 0x08, 0, 0x8e, (uint16_t)(a >> 16), (uint32_t)(a >> 32), 0};
}

/* IDT, PIC (vectors 32..47, the IRQs of `master_mask`'s clear bits unmasked), PIT at 100 Hz, then sti. */
static void start_interrupts(uint8_t master_mask) {
    for (int v = 0; v < 256; v++) set_gate(v, unexpected_stub);
    set_gate(32, irq0_stub);
    set_gate(33, irq1_stub);
    idt_ptr.limit = sizeof(idt) - 1;
    idt_ptr.base = (uint64_t)idt;
    load_idt(&idt_ptr);
    outb(0x20, 0x11); outb(0x21, 32); outb(0x21, 4); outb(0x21, 1); outb(0x21, master_mask);
    outb(0xa0, 0x11); outb(0xa1, 40); outb(0xa1, 2); outb(0xa1, 1); outb(0xa1, 0xff);
    /* PIT channel 0, mode 2, 100 Hz. */
    uint16_t div = 1193182 / 100;
    outb(0x43, 0x34); outb(0x40, (uint8_t)div); outb(0x40, (uint8_t)(div >> 8));
    __asm__ volatile("sti");
}

/* --- memwalk: guest RAM changing between snapshots, by the guest and by a device ---------------------- */
#define WALK_PAGES 64
#define WALK_STRIDE 16 /* pages from one counter page to the next */
#define WALK_SECTORS 8192
static volatile uint64_t walk_counters[WALK_PAGES * WALK_STRIDE * 512] __attribute__((aligned(4096)));
static uint8_t walk_reads[WALK_PAGES][4096] __attribute__((aligned(4096)));

/* The last m in 1..=n with m % WALK_PAGES == k, or 0. */
static uint64_t walk_last(uint64_t n, uint64_t k) {
    if (n < k || (k == 0 && n < WALK_PAGES)) return 0;
    return n - (n - k) % WALK_PAGES;
}

static void walk_bad(const char *what, uint64_t k, uint64_t got, uint64_t want) {
    puts_("memwalk: bad "); puts_(what); puts_(" page "); putu(k);
    puts_(": "); putu(got); puts_(", want "); putu(want); puts_("\n");
    die(66);
}

static void walk_step(uint64_t m) {
    uint64_t k = m % WALK_PAGES;
    walk_counters[k * WALK_STRIDE * 512] = m;
    blk_read_to(m % WALK_SECTORS, walk_reads[k]);
    for (uint64_t j = 0; j < WALK_PAGES; j++) {
        uint64_t want = walk_last(m, j);
        uint64_t got = walk_counters[j * WALK_STRIDE * 512];
        if (got != want) walk_bad("counter", j, got, want);
        uint64_t sector = want % WALK_SECTORS;
        volatile uint64_t *r = (volatile uint64_t *)walk_reads[j];
        uint64_t first = r[0], last = r[63];
        if (want == 0 ? (first | last) != 0 : first != sector || last != sector)
            walk_bad("read", j, first, sector);
    }
}

/* Prints a counter every 10 ticks until the Ctrl-Alt-Del scancodes arrive. */
static void count(void) {
    int walk = find("memwalk") != 0;
    start_interrupts(0xfc); /* IRQ 0 and 1 */
    if (walk) { puts_("memwalk: pages at 0x"); puthex((uint64_t)walk_counters); puts_("\n"); }
    puts_("counting\n");
    uint64_t n = 0, next = 10;
    for (;;) {
        __asm__ volatile("hlt");
        if (ticks >= next) {
            next = ticks + 10;
            if (walk) walk_step(n + 1);
            puts_("count "); putu(n++); puts_("\n");
        }
        int k = nkeys;
        if (k >= 4 && keys[k - 4] == 0x14 && keys[k - 3] == 0x11 && keys[k - 2] == 0xe0 && keys[k - 1] == 0x71) {
            puts_("keys:");
            for (int i = 0; i < k; i++) { puts_(" "); puthex(keys[i]); }
            puts_("\nctrl-alt-del\n");
            die(57);
        }
    }
}

static void take_ticks(uint64_t n) {
    start_interrupts(0xfe); /* only IRQ 0 */
    while (ticks < n) __asm__ volatile("hlt");
    __asm__ volatile("cli");
    puts_("ticks: "); putu(ticks); puts_("\n");
}

/* --- boot information ----------------------------------------------------------------------------- */
struct hvm_start_info { uint32_t magic, version, flags, nr_modules; uint64_t modlist, cmdline, rsdp, memmap; uint32_t memmap_entries, reserved; };
struct hvm_memmap_entry { uint64_t addr, size; uint32_t type, reserved; };
struct hvm_modlist_entry { uint64_t paddr, size, cmdline, reserved; };
struct e820_entry { uint64_t addr, size; uint32_t type; } __attribute__((packed));

void guest_main(int kind, uint64_t info) {
    uint64_t ram_kib = 0, entries = 0, initrd = 0, initrd_size = 0;
    if (kind == 0) {
        struct hvm_start_info *si = (void *)info;
        if (si->magic != 0x336ec578) { puts_("bad PVH magic\n"); die(98); }
        cmdline = (const char *)si->cmdline;
        struct hvm_memmap_entry *m = (void *)si->memmap;
        entries = si->memmap_entries;
        for (uint64_t i = 0; i < entries; i++) if (m[i].type == 1) ram_kib += m[i].size >> 10;
        if (si->nr_modules) {
            struct hvm_modlist_entry *mod = (void *)si->modlist;
            initrd = mod->paddr; initrd_size = mod->size;
        }
    } else {
        uint8_t *zp = (void *)info;
        cmdline = (const char *)(uint64_t)*(uint32_t *)(zp + 0x228);
        entries = zp[0x1e8];
        struct e820_entry *m = (void *)(zp + 0x2d0);
        for (uint64_t i = 0; i < entries; i++) if (m[i].type == 1) ram_kib += m[i].size >> 10;
        initrd = *(uint32_t *)(zp + 0x218); initrd_size = *(uint32_t *)(zp + 0x21c);
    }
    puts_(kind == 0 ? "test guest: boot=pvh\n" : "test guest: boot=linux\n");
    puts_("cmdline: "); puts_(cmdline); puts_("\n");
    puts_("memory: "); putu(entries); puts_(" entries, "); putu(ram_kib); puts_(" KiB RAM\n");
    if (initrd_size) {
        puts_("initrd: ");
        const char *p = (const char *)initrd;
        for (uint64_t i = 0; i < initrd_size && i < 64 && p[i] >= ' '; i++) putc_(p[i]);
        puts_("\n");
    }

    const char *v;
    if ((v = find("ticks"))) take_ticks(number(v));
    if (find("unknown-io")) {
        uint8_t port = inb(0x80);
        uint32_t mmio = *(volatile uint32_t *)0xd0000000ull;
        puts_("unknown io: "); puthex(port); puts_(" "); puthex(mmio); puts_("\n");
    }
    if (find("netnorx")) net_command(cmdline, 0);
    if (find("echo")) {
        char line[128];
        int n = 0;
        puts_("ready\n");
        for (;;) {
            while (!(inb(SERIAL + 5) & 1)) {}
            char c = (char)inb(SERIAL);
            if (c == '\n' || c == '\r' || n == 127) break;
            line[n++] = c;
        }
        line[n] = 0;
        puts_("echo: "); puts_(line); puts_("\n");
    }
    if (find("marker")) outb(BOOT_MARKER, 123);
    if (find("triple")) {
        puts_("triple faulting\n");
        idt_ptr.limit = 0; idt_ptr.base = 0;
        load_idt(&idt_ptr);
        __asm__ volatile("ud2");
    }
    if (find("badinsn")) {
        puts_("running an unemulated instruction\n");
        emulation_failure();
        puts_("the instruction ran\n");
    }
    if ((v = find("blkread"))) blk_read(number(v));
    if ((v = find("blkwrite"))) blk_write(number(v));
    if ((v = find("blkloop"))) blk_loop(number(v));
    if ((v = find("blkbulk"))) blk_bulk(number(v));
    if (find("netbad")) net_command(cmdline, 2);
    if (find("netecho")) net_command(cmdline, 1);
    if (find("vsockbad")) vsock_command(cmdline);
    if (find("count")) count();
    if (find("reset")) { puts_("resetting\n"); outb(0x64, 0xfe); }
    if (find("halt")) { puts_("halting\n"); for (;;) __asm__ volatile("cli; hlt"); }
    v = find("exit");
    die(v ? (uint8_t)number(v) : 0);
}
