// A program reading __kconfig externs of every type libbpf gives them: the kernel's
// version, an int, a bool, a tristate, a string, and a weak one no kernel sets. The
// loader lays them out in a .kconfig map and fills it from the running kernel, as
// libbpf does; the program copies each into .bss so a test can see what it read.
// Built into programs/build/kconfig_extern.o.
#include <stdbool.h>
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

extern unsigned int LINUX_KERNEL_VERSION __kconfig;
extern int CONFIG_HZ __kconfig __weak;
extern bool CONFIG_BPF_SYSCALL __kconfig;
extern enum libbpf_tristate CONFIG_NF_TABLES __kconfig __weak;
extern char CONFIG_LOCALVERSION[16] __kconfig __weak;
extern bool CONFIG_HANDOVER_NEVER_SET __kconfig __weak;

__u64 seen[6];

SEC("socket")
int kconfig_socket(struct __sk_buff *skb)
{
	seen[0] = LINUX_KERNEL_VERSION;
	seen[1] = CONFIG_HZ;
	seen[2] = CONFIG_BPF_SYSCALL;
	seen[3] = CONFIG_NF_TABLES;
	seen[4] = CONFIG_LOCALVERSION[0];
	seen[5] = CONFIG_HANDOVER_NEVER_SET;
	return LINUX_KERNEL_VERSION > 0x050000 ? skb->len : 0;
}

char LICENSE[] SEC("license") = "GPL";
