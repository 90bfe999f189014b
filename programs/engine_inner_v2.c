// Version 2 of programs/engine_inner.h, built into programs/build/engine_inner_v2.o.
#define VERSION 2
#include "engine_inner.h"
