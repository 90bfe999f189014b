// Version 1 of programs/engine_hooks.h, built into programs/build/engine_hooks_v1.o.
#define VERSION 1
#include "engine_hooks.h"
