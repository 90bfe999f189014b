// Version 1 of programs/engine_sockmsg.h, built into programs/build/engine_sockmsg_v1.o.
#define VERSION 1
#include "engine_sockmsg.h"
