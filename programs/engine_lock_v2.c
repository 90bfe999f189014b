// Version 2 of programs/engine_lock.h, built into programs/build/engine_lock_v2.o.
#define VERSION 2
#include "engine_lock.h"
