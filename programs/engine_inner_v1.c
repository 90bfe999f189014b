// Version 1 of programs/engine_inner.h, built into programs/build/engine_inner_v1.o.
#define VERSION 1
#include "engine_inner.h"
