// Version 2 of programs/engine_sockmsg.h, built into programs/build/engine_sockmsg_v2.o.
#define VERSION 2
#include "engine_sockmsg.h"
