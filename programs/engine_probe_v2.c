// Version 2 of programs/engine_probe.h, built into programs/build/engine_probe_v2.o.
#define VERSION 2
#include "engine_probe.h"
