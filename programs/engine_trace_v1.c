// Version 1 of programs/engine_trace.h, built into programs/build/engine_trace_v1.o.
#define VERSION 1
#include "engine_trace.h"
