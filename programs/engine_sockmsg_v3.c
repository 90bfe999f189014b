// Version 3 of programs/engine_sockmsg.h, built into programs/build/engine_sockmsg_v3.o.
#define VERSION 3
#include "engine_sockmsg.h"
