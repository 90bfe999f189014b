// Version 1 of programs/engine_lock.h, built into programs/build/engine_lock_v1.o.
#define VERSION 1
#include "engine_lock.h"
