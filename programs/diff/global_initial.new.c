// Global data initial values: new fields start as initialised, changed initial values are named.
// `enabled` moves from .bss (0) to .data (initialised to 1), so the new .data field starts at 1 as a fresh load would; `threshold` in
// .data.cfg keeps its layout but its initial value changes from 5 to 7, which the plan
// names (the upgrade keeps the running value).
// New version; built into programs/build/diff/global_initial.new.o.
#include "common.h"

__u64 seen = 0;
__u32 limit = 10;
__u32 enabled = 1;
__u32 threshold SEC(".data.cfg") = 7;
