// Mesh dataplane v3: the v2 maps and programs released again as a new build (same
// map definitions, new program objects): an upgrade that carries every map as it is
// and only switches the programs, as a point release does.
// Built into programs/build/dataplane/v3.o.
#include "v2.c"
