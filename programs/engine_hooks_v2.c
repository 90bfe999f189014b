// Version 2 of programs/engine_hooks.h, built into programs/build/engine_hooks_v2.o.
#define VERSION 2
#include "engine_hooks.h"
