// Version 1 of programs/engine_writer.h, built into programs/build/engine_writer_v1.o.
#define VERSION 1
#include "engine_writer.h"
