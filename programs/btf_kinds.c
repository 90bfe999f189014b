// BTF fixture: one use of every BTF kind clang emits, for the `handover btf dump` tests.
// Bitfields, signed/unsigned/64-bit enums, unions, typedefs, const/volatile/restrict,
// decl_tag and type_tag attributes, float, function prototypes and global variables in
// .data, .bss, .rodata and a map section.
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#define __tag(x) __attribute__((btf_decl_tag(x)))
#define __ttag(x) __attribute__((btf_type_tag(x)))

enum color { RED, GREEN = 5, BLUE = 0xffffffffu };
enum delta { DOWN = -3, FLAT = 0, UP = 7 };
enum wide { SMALL = 1, HUGE = 0x123456789abcdef0ull };
enum wide_signed { NEG_HUGE = -0x100000000ll, POS = 2 };

typedef unsigned long long u64_t;
typedef const volatile int cv_int;

struct flags {
	unsigned int a : 3;
	unsigned int b : 5;
	int c : 7;
	unsigned int : 0;
	unsigned char d : 1;
	unsigned long long e : 40;
} __tag("flags_struct");

union either {
	u64_t whole;
	struct {
		unsigned int lo;
		unsigned int hi;
	};
	char bytes[8];
};

struct point {
	float x;
	double y;
} __attribute__((packed));

struct node;

struct record {
	struct flags f;
	union either u[2];
	enum color color;
	enum delta delta;
	enum wide wide;
	enum wide_signed ws;
	struct point pts[3];
	struct node *next;
	int __ttag("user") *tagged;
	cv_int counter __tag("counter_field");
	_Bool ok;
	signed char sc;
	char name[16];
	long double ld;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16);
	__type(key, u64_t);
	__type(value, struct record);
} records SEC(".maps");

struct record global_record;
int initialised_counter = 42;
const volatile enum color rodata_color = GREEN;
static volatile union either static_either;
extern int extern_ksym __ksym __attribute__((weak));

static __attribute__((noinline)) int add(int *restrict a, const volatile int *restrict b __tag("param_tag"))
{
	*a += *b;
	return *a;
}

typedef int (*variadic_fn)(const char *fmt, ...);
variadic_fn variadic_hook;

__attribute__((noinline)) __tag("func_tag") long sum_flags(struct flags *f, int extra);

__attribute__((noinline)) long sum_flags(struct flags *f, int extra)
{
	return f->a + f->b + f->c + f->d + f->e + extra + (variadic_hook != 0);
}

SEC("xdp")
int btf_kinds(struct xdp_md *ctx)
{
	u64_t key = ctx->ingress_ifindex;
	struct record *r = bpf_map_lookup_elem(&records, &key);
	int x = initialised_counter;

	if (!r)
		return XDP_PASS;
	static_either.whole = rodata_color + r->delta + r->wide + r->ws;
	if (&extern_ksym)
		x += extern_ksym;
	add(&x, &r->counter);
	return (int)(sum_flags(&global_record.f, x) + x) & 3 ? XDP_PASS : XDP_DROP;
}

char LICENSE[] SEC("license") = "GPL";
