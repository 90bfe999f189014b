// Version 2 of programs/engine_trace.h, built into programs/build/engine_trace_v2.o.
#define VERSION 2
#include "engine_trace.h"
