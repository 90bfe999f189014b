// Version 2 of programs/engine_writer.h, built into programs/build/engine_writer_v2.o.
#define VERSION 2
#include "engine_writer.h"
