// Global data: .bss variables are matched by name like struct fields; .rodata is always new.
// New version; built into programs/build/diff/global_data.new.o.
#include "common.h"

__u64 packets_seen = 0;
__u64 errors = 0;
__u32 drops = 0;
volatile const __u32 mode = 2;
