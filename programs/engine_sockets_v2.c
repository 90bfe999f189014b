// Version 2 of programs/engine_sockets.h, built into programs/build/engine_sockets_v2.o.
#define VERSION 2
#include "engine_sockets.h"
