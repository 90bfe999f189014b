// Version 1 of programs/engine_probe.h, built into programs/build/engine_probe_v1.o.
#define VERSION 1
#include "engine_probe.h"
