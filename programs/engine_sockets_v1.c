// Version 1 of programs/engine_sockets.h, built into programs/build/engine_sockets_v1.o.
#define VERSION 1
#include "engine_sockets.h"
