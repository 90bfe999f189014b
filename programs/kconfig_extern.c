// A program reading a .kconfig extern, which the loader rejects with an error naming the
// symbol (resolving externs needs the running kernel's config). Built into
// programs/build/kconfig_extern.o.
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

extern unsigned int LINUX_KERNEL_VERSION __kconfig;

SEC("socket")
int kconfig_socket(struct __sk_buff *skb)
{
	return LINUX_KERNEL_VERSION > 0x050000 ? skb->len : 0;
}

char LICENSE[] SEC("license") = "GPL";
