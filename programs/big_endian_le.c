// The big-endian fixture compiled little-endian, to compare the two byte orders.
// Built into programs/build/big_endian_le.o.
#include "big_endian.bpfeb.c"
