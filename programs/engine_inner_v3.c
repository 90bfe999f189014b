// Version 3 of programs/engine_inner.h, built into programs/build/engine_inner_v3.o.
#define VERSION 3
#include "engine_inner.h"
