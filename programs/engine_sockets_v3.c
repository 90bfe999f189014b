// Version 3 of programs/engine_sockets.h, built into programs/build/engine_sockets_v3.o.
#define VERSION 3
#include "engine_sockets.h"
