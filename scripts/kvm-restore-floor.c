/*
 * kvm-restore-floor: the least a VMM with KVM's in-kernel irqchip and PIT must do to restore a snapshot and
 * reach its first KVM_RUN, to measure this host's floor beside microvm (scripts/bench-snapshot.py builds
 * and runs it). Static, no threads, no allocation beyond the state it reads.
 *
 *   kvm-restore-floor save STATE VCPUS      a fresh VM's state (VM: PIT, clock, PICs, IOAPIC; per vCPU:
 *                                           CPUID, every listed MSR, registers, special registers, XSAVE,
 *                                           XCRs, debug registers, LAPIC, MP state, events) written raw
 *   kvm-restore-floor restore STATE MEM MIB [VIRTIO]
 *                                           microvm's own ioctl sequence for a restore, nothing else: open
 *                                           /dev/kvm, its API version and the 8 capability checks, read
 *                                           STATE, map MEM (MIB MiB) MAP_PRIVATE, create the VM, the vCPU
 *                                           mmap size, one memory slot, identity map and TSS, irqchip, PIT,
 *                                           each vCPU with its kvm_run mapping, the VM's state, each vCPU's
 *                                           state in microvm's (Firecracker's) order (its TSC rate read,
 *                                           CPUID, MSRs but TSC_DEADLINE, registers, special registers, XSAVE,
 *                                           XCRs, debug registers, LAPIC, TSC_DEADLINE, MP state, events),
 *                                           the irqfds of the UART, the i8042 and the introspection channel,
 *                                           then for each of VIRTIO virtio-mmio devices (default 1: the
 *                                           bench's root disk) its irqfd and one queue-notify ioeventfd,
 *                                           and KVM_RUN
 *
 * `restore` prints CLOCK_MONOTONIC (ns) just before the first KVM_RUN on stderr ("first KVM_RUN
 * CLOCK_MONOTONIC N") and the time each step took ("step NAME US"), then exits 0 after that KVM_RUN
 * returns (the guest runs no real code: any exit will do).
 */
#include <fcntl.h>
#include <linux/kvm.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include <sys/eventfd.h>

#define MAX_VCPUS 2
#define MAX_MSRS 256
/* microvm's layout (vmm/src/arch/x86_64/layout.rs). */
#define IDENTITY_MAP_ADDR 0xfffbc000UL
#define TSS_ADDR 0xfffbd000UL
#define SERIAL_IRQ 4
#define I8042_IRQ 1
#define INTROSPECT_IRQ 21
#define VIRTIO_IRQ_BASE 5
#define VIRTIO_MMIO_START 0xd0000000ULL
#define VIRTIO_MMIO_SIZE 0x1000
#define QUEUE_NOTIFY_OFFSET 0x50
#define MSR_IA32_TSC_DEADLINE 0x6e0

static void die(const char *what)
{
	perror(what);
	exit(1);
}

struct vcpu_state {
	struct { struct kvm_cpuid2 c; struct kvm_cpuid_entry2 e[256]; } cpuid;
	struct { struct kvm_msrs m; struct kvm_msr_entry e[MAX_MSRS]; } msrs;
	struct kvm_regs regs;
	struct kvm_sregs sregs;
	struct kvm_xsave xsave;
	struct kvm_xcrs xcrs;
	struct kvm_debugregs debugregs;
	struct kvm_lapic_state lapic;
	struct kvm_mp_state mp_state;
	struct kvm_vcpu_events events;
};

static struct {
	uint32_t vcpus;
	struct kvm_pit_state2 pit;
	struct kvm_clock_data clock;
	struct kvm_irqchip chips[3];
	struct vcpu_state vcpu[MAX_VCPUS];
} state;

static uint64_t now_ns(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (uint64_t)t.tv_sec * 1000000000ULL + t.tv_nsec;
}

static uint64_t last;
static void step(const char *name)
{
	uint64_t t = now_ns();
	fprintf(stderr, "step %s %.1f\n", name, (t - last) / 1e3);
	last = now_ns();
}

static int timed; /* report each step of create_vm */
static void step(const char *name);

static int run_size;

static int create_vm(int kvm, void *mem, uint64_t size)
{
	int vm = ioctl(kvm, KVM_CREATE_VM, 0);
	if (vm < 0)
		die("KVM_CREATE_VM");
	run_size = ioctl(kvm, KVM_GET_VCPU_MMAP_SIZE, 0);
	if (run_size < 0)
		die("KVM_GET_VCPU_MMAP_SIZE");
	if (timed)
		step("KVM_CREATE_VM");
	struct kvm_userspace_memory_region region = {
		.slot = 0, .guest_phys_addr = 0, .memory_size = size, .userspace_addr = (uint64_t)mem
	};
	if (ioctl(vm, KVM_SET_USER_MEMORY_REGION, &region) < 0)
		die("KVM_SET_USER_MEMORY_REGION");
	uint64_t identity = IDENTITY_MAP_ADDR;
	if (ioctl(vm, KVM_SET_IDENTITY_MAP_ADDR, &identity) < 0)
		die("KVM_SET_IDENTITY_MAP_ADDR");
	if (ioctl(vm, KVM_SET_TSS_ADDR, TSS_ADDR) < 0)
		die("KVM_SET_TSS_ADDR");
	if (timed)
		step("memory-slot-and-TSS");
	if (ioctl(vm, KVM_CREATE_IRQCHIP, 0) < 0)
		die("KVM_CREATE_IRQCHIP");
	if (timed)
		step("KVM_CREATE_IRQCHIP");
	struct kvm_pit_config pc = { .flags = KVM_PIT_SPEAKER_DUMMY };
	if (ioctl(vm, KVM_CREATE_PIT2, &pc) < 0)
		die("KVM_CREATE_PIT2");
	if (timed)
		step("KVM_CREATE_PIT2");
	return vm;
}

static void save(const char *path, int vcpus)
{
	int kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	if (kvm < 0)
		die("/dev/kvm");
	uint64_t size = 16 << 20;
	void *mem = mmap(0, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	int vm = create_vm(kvm, mem, size);
	state.vcpus = vcpus;
	if (ioctl(vm, KVM_GET_PIT2, &state.pit) < 0)
		die("KVM_GET_PIT2");
	if (ioctl(vm, KVM_GET_CLOCK, &state.clock) < 0)
		die("KVM_GET_CLOCK");
	state.clock.flags = 0;
	for (int i = 0; i < 3; i++) {
		state.chips[i].chip_id = i;
		if (ioctl(vm, KVM_GET_IRQCHIP, &state.chips[i]) < 0)
			die("KVM_GET_IRQCHIP");
	}
	struct { struct kvm_msr_list l; uint32_t i[MAX_MSRS]; } list = { .l = { .nmsrs = MAX_MSRS } };
	if (ioctl(kvm, KVM_GET_MSR_INDEX_LIST, &list) < 0)
		die("KVM_GET_MSR_INDEX_LIST");
	for (int v = 0; v < vcpus; v++) {
		struct vcpu_state *s = &state.vcpu[v];
		int fd = ioctl(vm, KVM_CREATE_VCPU, v);
		if (fd < 0)
			die("KVM_CREATE_VCPU");
		s->cpuid.c.nent = 256;
		if (ioctl(kvm, KVM_GET_SUPPORTED_CPUID, &s->cpuid) < 0)
			die("KVM_GET_SUPPORTED_CPUID");
		if (ioctl(fd, KVM_SET_CPUID2, &s->cpuid) < 0)
			die("KVM_SET_CPUID2");
		/* Every listed MSR this vCPU can read, one at a time (some cannot be read at all). */
		uint32_t n = 0;
		for (uint32_t i = 0; i < list.l.nmsrs; i++) {
			struct { struct kvm_msrs m; struct kvm_msr_entry e; } one = { .m = { .nmsrs = 1 } };
			one.e.index = list.i[i];
			if (ioctl(fd, KVM_GET_MSRS, &one) == 1)
				s->msrs.e[n++] = one.e;
		}
		s->msrs.m.nmsrs = n;
		if (ioctl(fd, KVM_GET_REGS, &s->regs) < 0 || ioctl(fd, KVM_GET_SREGS, &s->sregs) < 0 ||
		    ioctl(fd, KVM_GET_XSAVE, &s->xsave) < 0 || ioctl(fd, KVM_GET_XCRS, &s->xcrs) < 0 ||
		    ioctl(fd, KVM_GET_DEBUGREGS, &s->debugregs) < 0 || ioctl(fd, KVM_GET_LAPIC, &s->lapic) < 0 ||
		    ioctl(fd, KVM_GET_MP_STATE, &s->mp_state) < 0 ||
		    ioctl(fd, KVM_GET_VCPU_EVENTS, &s->events) < 0)
			die("saving a vCPU");
	}
	FILE *f = fopen(path, "wb");
	if (!f || fwrite(&state, sizeof state, 1, f) != 1 || fclose(f))
		die(path);
}

static void irqfd(int vm, uint32_t gsi)
{
	struct kvm_irqfd r = { .fd = eventfd(0, EFD_NONBLOCK), .gsi = gsi };
	if ((int)r.fd < 0 || ioctl(vm, KVM_IRQFD, &r) < 0)
		die("KVM_IRQFD");
}

static void restore(const char *path, const char *mem_path, uint64_t mib, int virtio)
{
	last = now_ns();
	int kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	if (kvm < 0)
		die("/dev/kvm");
	if (ioctl(kvm, KVM_GET_API_VERSION, 0) != KVM_API_VERSION)
		die("KVM_GET_API_VERSION");
	static const int caps[] = { KVM_CAP_IRQCHIP, KVM_CAP_USER_MEMORY, KVM_CAP_SET_TSS_ADDR, KVM_CAP_PIT2,
				    KVM_CAP_IOEVENTFD, KVM_CAP_IRQFD, KVM_CAP_MAX_VCPUS, KVM_CAP_NR_VCPUS };
	for (unsigned i = 0; i < sizeof caps / sizeof caps[0]; i++)
		if (ioctl(kvm, KVM_CHECK_EXTENSION, caps[i]) <= 0)
			die("KVM_CHECK_EXTENSION");
	int sf = open(path, O_RDONLY | O_CLOEXEC);
	if (sf < 0 || read(sf, &state, sizeof state) != sizeof state)
		die(path);
	close(sf);
	if (state.vcpus < 1 || state.vcpus > MAX_VCPUS) {
		fprintf(stderr, "%s: bad vCPU count\n", path);
		exit(1);
	}
	step("open-and-read");
	uint64_t size = mib << 20;
	int mf = open(mem_path, O_RDONLY | O_CLOEXEC);
	if (mf < 0)
		die(mem_path);
	void *mem = mmap(0, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_NORESERVE, mf, 0);
	if (mem == MAP_FAILED)
		die("mmap");
	step("map-memory-file");
	timed = 1;
	int vm = create_vm(kvm, mem, size);
	int fds[MAX_VCPUS];
	struct kvm_run *run[MAX_VCPUS];
	for (uint32_t v = 0; v < state.vcpus; v++) {
		fds[v] = ioctl(vm, KVM_CREATE_VCPU, v);
		if (fds[v] < 0)
			die("KVM_CREATE_VCPU");
		run[v] = mmap(0, run_size, PROT_READ | PROT_WRITE, MAP_SHARED, fds[v], 0);
		if (run[v] == MAP_FAILED)
			die("mmap kvm_run");
	}
	step("create-vcpus");
	if (ioctl(vm, KVM_SET_PIT2, &state.pit) < 0 || ioctl(vm, KVM_SET_CLOCK, &state.clock) < 0)
		die("KVM_SET_PIT2/CLOCK");
	for (int i = 0; i < 3; i++)
		if (ioctl(vm, KVM_SET_IRQCHIP, &state.chips[i]) < 0)
			die("KVM_SET_IRQCHIP");
	step("vm-state");
	for (uint32_t v = 0; v < state.vcpus; v++) {
		struct vcpu_state *s = &state.vcpu[v];
		int fd = fds[v];
		if (ioctl(fd, KVM_GET_TSC_KHZ, 0) <= 0)
			die("KVM_GET_TSC_KHZ");
		if (ioctl(fd, KVM_SET_CPUID2, &s->cpuid) < 0)
			die("KVM_SET_CPUID2");
		/* As microvm: every MSR but TSC_DEADLINE, which follows the LAPIC. */
		static struct { struct kvm_msrs m; struct kvm_msr_entry e[MAX_MSRS]; } rest;
		struct { struct kvm_msrs m; struct kvm_msr_entry e; } deadline = { .m = { .nmsrs = 0 } };
		rest.m.nmsrs = 0;
		for (uint32_t i = 0; i < s->msrs.m.nmsrs; i++) {
			if (s->msrs.e[i].index == MSR_IA32_TSC_DEADLINE) {
				deadline.e = s->msrs.e[i];
				deadline.m.nmsrs = 1;
			} else {
				rest.e[rest.m.nmsrs++] = s->msrs.e[i];
			}
		}
		if (ioctl(fd, KVM_SET_MSRS, &rest) != (int)rest.m.nmsrs)
			die("KVM_SET_MSRS");
		if (ioctl(fd, KVM_SET_REGS, &s->regs) < 0 || ioctl(fd, KVM_SET_SREGS, &s->sregs) < 0 ||
		    ioctl(fd, KVM_SET_XSAVE, &s->xsave) < 0 || ioctl(fd, KVM_SET_XCRS, &s->xcrs) < 0 ||
		    ioctl(fd, KVM_SET_DEBUGREGS, &s->debugregs) < 0 || ioctl(fd, KVM_SET_LAPIC, &s->lapic) < 0)
			die("restoring a vCPU");
		if (deadline.m.nmsrs && ioctl(fd, KVM_SET_MSRS, &deadline) != 1)
			die("KVM_SET_MSRS TSC_DEADLINE");
		if (ioctl(fd, KVM_SET_MP_STATE, &s->mp_state) < 0 ||
		    ioctl(fd, KVM_SET_VCPU_EVENTS, &s->events) < 0)
			die("restoring a vCPU");
	}
	step("vcpu-state");
	irqfd(vm, SERIAL_IRQ);
	irqfd(vm, I8042_IRQ);
	irqfd(vm, INTROSPECT_IRQ);
	for (int d = 0; d < virtio; d++) {
		irqfd(vm, VIRTIO_IRQ_BASE + d);
		struct kvm_ioeventfd io = {
			.addr = VIRTIO_MMIO_START + d * VIRTIO_MMIO_SIZE + QUEUE_NOTIFY_OFFSET,
			.len = 4,
			.datamatch = 0,
			.fd = eventfd(0, EFD_NONBLOCK),
			.flags = KVM_IOEVENTFD_FLAG_DATAMATCH,
		};
		if (io.fd < 0 || ioctl(vm, KVM_IOEVENTFD, &io) < 0)
			die("KVM_IOEVENTFD");
	}
	step("irqfds-and-ioeventfds");
	fprintf(stderr, "first KVM_RUN CLOCK_MONOTONIC %llu\n", (unsigned long long)now_ns());
	if (ioctl(fds[0], KVM_RUN, 0) < 0)
		die("KVM_RUN");
	(void)run;
	exit(0);
}

int main(int argc, char **argv)
{
	if (argc == 4 && !strcmp(argv[1], "save"))
		save(argv[2], atoi(argv[3]));
	else if ((argc == 5 || argc == 6) && !strcmp(argv[1], "restore"))
		restore(argv[2], argv[3], strtoull(argv[4], 0, 10), argc == 6 ? atoi(argv[5]) : 1);
	else {
		fprintf(stderr, "usage: kvm-restore-floor save STATE VCPUS | restore STATE MEM MIB [VIRTIO]\n");
		return 1;
	}
	return 0;
}
